"""Settings, read from environment variables when asked for, never at import time.

Every limit lives here with its unit last in the name; `Settings.check()` asserts how
the limits relate, so a bad deployment fails at start rather than in the middle of a run.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal

from pipeline.money import MINOR_UNITS


def _split(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _flag(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off); anything else is refused at start."""
    value = text.strip().lower()
    if value not in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
        raise ValueError(f"{text!r} is not true or false")
    return value in ("true", "1", "yes", "on")


_PARSERS = {frozenset: _split, int: int, float: float, bool: _flag}


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql+psycopg://wallet@127.0.0.1:54329/wallet"
    redis_url: str = "redis://127.0.0.1:63799/0"
    supported_currencies: frozenset[str] = frozenset({"SGD", "JPY", "USD"})
    default_currency: str = "SGD"
    #: Fee on transfers, in basis points of the amount, paid by the sender.
    transfer_fee_bps: int = 0
    #: System wallets per currency and name; spreading `bank`, `fees` and `bulk_funding`
    #: over shards keeps concurrent movements from queueing behind one hot row. With 8 shards,
    #: 64 concurrent transfers waited 12 ms on average for a `fees` shard; with 32, 4 ms.
    system_wallet_shards: int = 32
    #: Attempts at one database transaction that hit a deadlock or serialization failure.
    transaction_attempts_max: int = 5
    #: How long a request waits for a row lock or a concurrent request with its key.
    lock_timeout_ms: int = 5_000
    database_pool_size: int = 10
    bulk_credit_max_bytes: int = 200 * 1024 * 1024
    bulk_credit_max_rows: int = 2_000_000
    bulk_credit_chunk_rows: int = 5_000
    bulk_credit_max_amount: str = "1000000.00"
    bulk_credit_fail_user_ids: frozenset[str] = field(default_factory=frozenset)
    #: `none`, `always` or per-currency thresholds in major units (pipeline/bulk/approval.py).
    bulk_credit_approval: str = "none"
    #: A hold's life when the request names none, and the longest it may ask for, in seconds.
    hold_expiry_default_s: int = 86_400
    hold_expiry_max_s: int = 30 * 86_400
    retry_max_attempts: int = 5
    retry_base_delay_s: float = 30.0
    reconcile_interval_s: int = 300
    #: How often the scheduler looks for rows due for a retry and for lost chunks.
    scheduler_sweep_interval_s: float = 5.0
    chunk_lease_s: int = 120
    alert_webhook_url: str = ""
    slow_query_ms: int = 500
    #: Outbox rows one publisher transaction moves to the event streams.
    events_publish_batch_max: int = 1_000
    #: How long the publisher sleeps when the outbox is empty, in seconds.
    events_poll_interval_s: float = 0.2
    #: Entries kept (about: trimmed with MAXLEN ~) in `wallet.events`, in each user shard
    #: stream, and in each activity's stream; an activity's stream expires this long after
    #: its last event.
    events_stream_maxlen: int = 100_000
    events_user_shards: int = 16
    events_user_shard_maxlen: int = 5_000
    events_activity_maxlen: int = 50_000
    events_activity_ttl_s: int = 86_400
    #: One `GET /api/v1/events` response: its longest life, in seconds; its longest wait for
    #: Redis (also the heartbeat interval), in milliseconds; and entries per read.
    events_feed_duration_max_s: float = 300.0
    events_feed_block_ms: int = 5_000
    events_feed_read_count_max: int = 200
    #: Streamed responses (event feeds and the dashboard's live progress together) one web
    #: process serves at once; each holds a gthread thread, and gunicorn.conf.py refuses a
    #: budget above half of WEB_THREADS.
    streams_per_process_max: int = 4
    #: Signs the dashboard's session cookie. Production must set it (at least 32 characters),
    #: the same in every web process; unset, `session_secret_key` derives a development key.
    #: Kept out of repr(), so that a logged Settings shows no secret.
    secret_key: str = field(default="", repr=False)
    #: Webhooks (pipeline/webhooks/): true lets subscriptions and deliveries reach loopback and
    #: private addresses (tests, a receiver on the same network); false refuses them with
    #: `url_not_allowed`, at subscription and again at every delivery (DNS may change).
    webhook_allow_private_urls: bool = False
    #: One delivery's limits: connecting, then waiting for the answer, in seconds.
    webhook_connect_timeout_s: float = 5.0
    webhook_read_timeout_s: float = 10.0
    #: Attempts of one delivery before it is FAILED, and the pauses between them: the first is
    #: the base, each doubles, up to the max. Defaults: 17 attempts over about 25 hours.
    webhook_attempts_max: int = 17
    webhook_retry_base_delay_s: float = 10.0
    webhook_retry_delay_max_s: float = 14_400.0

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            raw = environ.get(spec.name.upper())
            if raw is None or not raw.strip():  # empty means not set (.env.example)
                continue
            default = spec.default if spec.default_factory is MISSING else spec.default_factory()
            values[spec.name] = _PARSERS.get(type(default), str)(raw)
        settings = cls(**values)
        settings.check()
        return settings

    @property
    def approval_policy(self):
        from pipeline.bulk.approval import ApprovalPolicy  # the rule lives with the bulk credits

        return ApprovalPolicy.parse(self.bulk_credit_approval)

    @property
    def session_secret_key(self) -> str:
        """SECRET_KEY, or a development key derived from DATABASE_URL when it is unset.

        Derived rather than random, so that every gunicorn worker and every restart signs
        and reads the same cookies; anyone who knows DATABASE_URL can forge it, which is
        why production sets SECRET_KEY.
        """
        if self.secret_key:
            return self.secret_key
        return hashlib.sha256(f"wallet-pipeline development session key:{self.database_url}".encode()).hexdigest()

    def check(self) -> None:
        unknown = self.supported_currencies - MINOR_UNITS.keys()
        assert not unknown, f"SUPPORTED_CURRENCIES has unknown codes: {sorted(unknown)}"
        assert self.default_currency in self.supported_currencies, "DEFAULT_CURRENCY must be supported"
        assert 0 <= self.transfer_fee_bps <= 10_000, "TRANSFER_FEE_BPS must be within 0..10000"
        assert 1 <= self.system_wallet_shards <= 64
        assert 1 <= self.transaction_attempts_max <= 20
        assert 1 <= self.bulk_credit_chunk_rows <= 50_000, "BULK_CREDIT_CHUNK_ROWS must be within 1..50000"
        assert self.bulk_credit_chunk_rows <= self.bulk_credit_max_rows <= 10_000_000
        assert 1 <= self.retry_max_attempts <= 50
        assert 1 <= self.hold_expiry_default_s <= self.hold_expiry_max_s <= 366 * 86_400, \
            "HOLD_EXPIRY_DEFAULT_S must be within 1..HOLD_EXPIRY_MAX_S, at most 366 days"
        unsupported = self.approval_policy.thresholds.keys() - self.supported_currencies  # parses, or says why not
        assert not unsupported, f"BULK_CREDIT_APPROVAL names unsupported currencies: {sorted(unsupported)}"
        # One chunk's credits add up to less than half of what a bigint balance holds, so no
        # chunk total or funding debit can overflow however the rows are spread.
        largest_minor = Decimal(self.bulk_credit_max_amount) * 10 ** max(
            MINOR_UNITS[code] for code in self.supported_currencies)
        assert largest_minor * self.bulk_credit_chunk_rows <= 2**62, \
            "BULK_CREDIT_MAX_AMOUNT x BULK_CREDIT_CHUNK_ROWS must stay below 2**62 minor units"
        assert self.chunk_lease_s >= 5, "a chunk lease shorter than 5 s expires under normal load"
        assert 0.2 <= self.scheduler_sweep_interval_s <= self.chunk_lease_s
        assert 1 <= self.events_publish_batch_max <= 10_000
        assert 0.01 <= self.events_poll_interval_s <= 5
        assert 1 <= self.events_user_shards <= 1_024, "EVENTS_USER_SHARDS: a fixed number of stream keys"
        assert min(self.events_stream_maxlen, self.events_user_shard_maxlen, self.events_activity_maxlen) >= 100
        assert self.events_activity_ttl_s >= 60
        assert 100 <= self.events_feed_block_ms <= 30_000, "EVENTS_FEED_BLOCK_MS: also the heartbeat interval"
        assert self.events_feed_block_ms / 1000 <= self.events_feed_duration_max_s <= 3_600
        assert 1 <= self.events_feed_read_count_max <= 1_000
        assert 1 <= self.streams_per_process_max <= 1_000
        assert not self.secret_key or len(self.secret_key) >= 32, "SECRET_KEY must have at least 32 characters"
        assert 0.1 <= self.webhook_connect_timeout_s <= 30, "WEBHOOK_CONNECT_TIMEOUT_S must be within 0.1..30"
        assert 0.1 <= self.webhook_read_timeout_s <= 60, "WEBHOOK_READ_TIMEOUT_S must be within 0.1..60"
        assert 1 <= self.webhook_attempts_max <= 50, "WEBHOOK_ATTEMPTS_MAX must be within 1..50"
        assert 0.01 <= self.webhook_retry_base_delay_s <= self.webhook_retry_delay_max_s <= 86_400, \
            "WEBHOOK_RETRY_BASE_DELAY_S <= WEBHOOK_RETRY_DELAY_MAX_S <= 86400"
