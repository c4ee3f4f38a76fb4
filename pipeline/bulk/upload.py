"""Upload: a CSV stream becomes an activity, its rows and its chunks, in one database transaction.

The bytes are read once, as a stream. Two hashes find a file uploaded before (see
pipeline/bulk/content.py): the hash of its bytes, taken ahead when the upload is spooled
to a seekable file, finds a byte-identical file before anything is parsed; the hash of its
rows (`content_sha256`, unique among activities that did not opt out) is computed as they
stream to COPY, so a re-saved variant (CRLF, BOM, quoting, spacing) is only known once
they have: its transaction is then rolled back (nothing of it stays) and the earlier
activity is returned instead. Two identical uploads at once meet at the UNIQUE index. `allow_duplicate_content` makes identical rows a new activity on purpose;
their references are refused all the same (storage/bulk/upload.py), so a deliberate second
payout needs new references or none.

Messages go out after the commit; if that send fails, the chunks' leases expire and the
scheduler sends them again (the database, not the queue, says what is left to do).
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Callable, Iterator

from pipeline import audit
from pipeline.bulk.content import RowsDigest
from pipeline.bulk.ports import Activity, Actor, ChunkQueue, DuplicateContent, DuplicateKey, send_after_commit
from pipeline.bulk.release import admit
from pipeline.bulk.rows import Row, RowChecker, read_rows, text_of
from pipeline.bulk.status import SETTLED_STATUSES, Counters, status_after_upload
from pipeline.config import Settings
from pipeline.errors import FieldError, IdempotencyKeyReused, Rejected, ValidationFailed
from pipeline.funding import DEFAULT_ACCOUNT, parse_account_name
from pipeline.text import parse_idempotency_key, storable

log = logging.getLogger(__name__)

#: How many bytes the parser asks the upload stream for at a time.
READ_BYTES = 256 * 1024
#: The longest file name kept, in characters (the rest is cut: it is a label, not data).
FILE_NAME_LENGTH_MAX = 200
#: The message of rows whose user does not exist at upload time.
UNKNOWN_USER_MESSAGE = "no user has this uuid"


class TooLarge(Rejected):
    code = "payload_too_large"
    status = 413


@dataclass(frozen=True)
class Uploaded:
    activity: Activity
    #: False when the same content or Idempotency-Key found an existing activity.
    created: bool


class HashingReader(io.RawIOBase):
    """A binary stream that hashes and counts what passes through, up to `max_bytes`."""

    def __init__(self, source: BinaryIO, max_bytes: int, start: int | None):
        self.source, self.max_bytes, self.start = source, max_bytes, start
        self.size_bytes = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        self.size_bytes += len(data)
        if self.size_bytes > self.max_bytes:
            raise TooLarge(f"the file is larger than BULK_CREDIT_MAX_BYTES ({self.max_bytes} bytes)")
        self.sha256.update(data)
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> str:
        while self.read(READ_BYTES):
            pass
        return self.sha256.hexdigest()

    def rewound(self) -> "HashingReader | None":
        """A fresh reader from the source's start, or None when the source cannot seek."""
        if self.start is None:
            return None
        self.source.seek(self.start)
        return HashingReader(self.source, self.max_bytes, self.start)


class Tally:
    """Counts rows as they stream to COPY, numbers valid ones into chunks, and hashes them."""

    def __init__(self, chunk_rows: int, max_rows: int, digest: RowsDigest):
        self.chunk_rows, self.max_rows, self.digest = chunk_rows, max_rows, digest
        self.total = self.invalid = 0
        #: Valid rows with a `reference`: none means no duplicate check is needed.
        self.references = 0

    def number(self, rows: Iterator[Row]) -> Iterator[tuple[Row, int | None]]:
        for row in rows:
            self.total += 1
            if self.total > self.max_rows:
                raise TooLarge(f"the file has more than BULK_CREDIT_MAX_ROWS ({self.max_rows}) rows")
            self.digest.add(row)
            if row.error_code is None:
                self.references += row.reference is not None
                yield row, (self.total - self.invalid - 1) // self.chunk_rows
            else:
                self.invalid += 1
                yield row, None


def upload(uow_factory: Callable, queue: ChunkQueue, settings: Settings, source: BinaryIO,
           file_name: str | None = None, idempotency_key: str | None = None,
           api_key_id: int | None = None, execute_at: datetime | None = None, *,
           funding_account: str | None = None, allow_duplicate_content: bool = False) -> Uploaded:
    """Stores the file as a new activity drawing from `funding_account` (default: `default`),
    or returns the earlier activity of the same Idempotency-Key or, unless
    `allow_duplicate_content`, of the same rows.

    Raises ValidationFailed (an unknown funding account, an Idempotency-Key over 255
    characters or with a NUL), UnreadableFile, TooLarge,
    IdempotencyKeyReused (the key with other rows or another funding account) and
    IdempotencyKeyInProgress (the same key or file still being uploaded).
    """
    funding_account = checked_funding_account(funding_account)
    idempotency_key = parse_idempotency_key(idempotency_key, required=False)  # the CLI's too, not only HTTP's
    start = start_of(source)
    reader = HashingReader(source, settings.bulk_credit_max_bytes, start)
    file_sha256 = None if start is None else _hash_ahead(source, start, settings.bulk_credit_max_bytes)
    with uow_factory() as uow:
        if not uow.funding.account_exists(funding_account):
            raise ValidationFailed(f"there is no funding account {funding_account!r}",
                                   [FieldError("funding_account", "no funding account has this name")])
        existing = None if idempotency_key is None else uow.bulk.find_by_idempotency_key(api_key_id, idempotency_key)
        same_file = None
        if existing is None and file_sha256 is not None and not allow_duplicate_content:
            same_file = uow.bulk.find_by_file(file_sha256)
    if existing is not None:
        return _replay(uow_factory, settings, existing, reader, file_sha256, funding_account, execute_at)
    if same_file is not None:
        return Uploaded(_same_account(same_file, funding_account), created=False)
    activity_id = str(uuid.uuid4())
    try:
        chunk_ids = _store(uow_factory(), settings, reader, activity_id, file_name, idempotency_key, api_key_id,
                           execute_at, funding_account, allow_duplicate_content)
    except DuplicateKey:
        with uow_factory() as uow:
            existing = uow.bulk.find_by_idempotency_key(api_key_id, idempotency_key)
        again = reader.rewound()
        if again is None:  # a stream that cannot seek: only its bytes can be compared now
            file_sha256 = reader.drain()
        return _replay(uow_factory, settings, existing, again, file_sha256, funding_account, execute_at)
    except DuplicateContent as duplicate:
        with uow_factory() as uow:
            return Uploaded(_same_account(uow.bulk.find_by_content(duplicate.args[0]), funding_account), created=False)
    send_after_commit(queue, chunk_ids)
    with uow_factory() as uow:
        return Uploaded(uow.bulk.activity(activity_id), created=True)


def checked_funding_account(name: str | None) -> str:
    """The funding account's name (blank or None: `default`); ValidationFailed if it cannot be one."""
    return parse_account_name((name or "").strip() or DEFAULT_ACCOUNT)


def start_of(source: BinaryIO) -> int | None:
    """Where a seekable source (an upload spooled to disk, a file) starts; None otherwise."""
    try:
        return source.tell() if source.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _hash_ahead(source: BinaryIO, start: int, max_bytes: int) -> str:
    """The bytes hash of a seekable source, read before parsing so that a byte-identical
    duplicate costs one pass of hashing, not a rolled-back COPY."""
    digest, size_bytes = hashlib.sha256(), 0
    while data := source.read(READ_BYTES):
        size_bytes += len(data)
        if size_bytes > max_bytes:
            raise TooLarge(f"the file is larger than BULK_CREDIT_MAX_BYTES ({max_bytes} bytes)")
        digest.update(data)
    source.seek(start)
    return digest.hexdigest()


class DuplicateContentElsewhere(Rejected):
    """The same rows were uploaded to pay from another funding account."""

    code = "duplicate_content"
    status = 422


def _same_account(earlier: Activity, funding_account: str) -> Activity:
    """The earlier activity of the same rows, when it pays from the same account. Answering it
    for an upload that names another account would look like a payout from that account;
    paying again would pay the same rows twice: neither happens without
    allow_duplicate_content. Raises DuplicateContentElsewhere."""
    if earlier.funding_account != funding_account:
        raise DuplicateContentElsewhere(
            f"these rows were already uploaded as activity {earlier.id}, paid from funding account"
            f" {earlier.funding_account!r}; send allow_duplicate_content=true to pay them again from"
            f" {funding_account!r}", [FieldError("funding_account", f"the rows are {earlier.funding_account!r}'s")])
    return earlier


def _replay(uow_factory: Callable, settings: Settings, existing: Activity, reader: HashingReader | None,
            file_sha256: str | None, funding_account: str, execute_at: datetime | None) -> Uploaded:
    """The activity an Idempotency-Key names, when this request is the same one: the same
    funding account, schedule and bytes, or else the same rows (parsed from `reader`, at the
    file's start, never stored)."""
    with uow_factory() as uow:
        stored = uow.bulk.upload_identity(existing.id)
    if stored.funding_account != funding_account:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different funding account")
    if existing.execute_at != execute_at:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different execute_at")
    if file_sha256 is not None and file_sha256 == stored.file_sha256:
        return Uploaded(existing, created=False)
    if reader is None:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different file")
    rows = read_rows(text_of(io.BufferedReader(reader, buffer_size=READ_BYTES)), lambda h: checker(settings, h))
    digest = RowsDigest(rows.columns)
    for row in rows:
        digest.add(row)
    reader.drain()
    if digest.hexdigest() != stored.content_sha256 and reader.sha256.hexdigest() != stored.file_sha256:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different file")
    return Uploaded(existing, created=False)


def checker(settings: Settings, header) -> RowChecker:
    return RowChecker(header, settings.supported_currencies, settings.default_currency,
                      settings.bulk_credit_max_amount)


def _store(uow, settings: Settings, reader: HashingReader, activity_id: str, file_name, key, api_key_id,
           execute_at: datetime | None, funding_account: str, allow_duplicate_content: bool) -> list[int]:
    text = text_of(io.BufferedReader(reader, buffer_size=READ_BYTES))
    rows = read_rows(text, lambda header: checker(settings, header))
    tally = Tally(settings.bulk_credit_chunk_rows, settings.bulk_credit_max_rows, RowsDigest(rows.columns))
    with uow:
        uow.bulk.add_activity(activity_id, api_key_id, key, storable_name(file_name), rows.columns,
                              funding_account=funding_account, allow_duplicate_content=allow_duplicate_content)
        uow.bulk.copy_rows(activity_id, tally.number(rows))
        reader.drain()  # whatever trails the last record still belongs to the bytes hash
        content_sha256 = tally.digest.hexdigest()
        if not allow_duplicate_content and uow.bulk.find_by_content(content_sha256) is not None:
            raise DuplicateContent(content_sha256)  # rolled back before the reference and user checks
        invalid = tally.invalid + uow.bulk.invalidate_unknown_users(activity_id, UNKNOWN_USER_MESSAGE)
        if tally.references:
            invalid += uow.bulk.claim_references(activity_id, funding_account, tally.references)
        valid = tally.total - invalid
        counters = Counters(tally.total, valid, invalid, 0, 0, valid)
        status = status_after_upload(counters)
        uow.bulk.finish_upload(activity_id, content_sha256, reader.size_bytes, counters, status,
                               file_sha256=reader.sha256.hexdigest())
        uploader = Actor("api_key", api_key_id) if api_key_id is not None else Actor("command_line")
        uow.bulk.add_history(activity_id, None, status, status in SETTLED_STATUSES, uploader)
        if execute_at is not None:
            uow.bulk.set_execute_at(activity_id, execute_at)
        # Held for approval or until execute_at, or released at once: its total is reserved
        # from the funding account, or it waits for funds.
        chunk_ids = admit(uow, settings, activity_id, uploader, execute_at)
        audit.record(uow, uploader, "bulk_credit.upload", "activity", activity_id, file_name=storable_name(file_name),
                     total_records=tally.total, valid_records=valid, funding_account=funding_account)
        uow.commit()
    return chunk_ids


def storable_name(file_name: str | None) -> str | None:
    """The upload's file name as PostgreSQL can store it and a page can show it: characters
    it cannot store (NUL, a lone surrogate from a name that was not UTF-8), control and
    format characters (a newline, U+202E that reverses the text shown after it) become U+FFFD.
    Only the last part of a path is kept: some clients send `/home/ana/pay.csv` (or, unquoted,
    `C:\\Users\\ana\\pay.csv`), and a home folder is nobody's business."""
    name = re.split(r"[\\/]", file_name or "")[-1][:FILE_NAME_LENGTH_MAX]
    if not name:
        return None
    return "".join(character if storable(character) and unicodedata.category(character) not in ("Cc", "Cf")
                   else "\ufffd" for character in name)
