"""Following one stream for one subscriber: what `GET /api/v1/events` sends.

A subscriber reads the stream its filter maps to (`pipeline.events` names the keys) from
a position: the `Last-Event-ID` it last received, or the newest entry when it has none,
so it gets every event published after it connected. Every wait and every connection is
bounded: a read blocks at most `block_ms`, returns at most `read_count_max` entries, and
the feed ends after `duration_max_s`, when the client reconnects with its `Last-Event-ID`
and loses nothing still in the stream. A heartbeat goes out whenever nothing was sent for
`block_ms`, so a dead client is noticed within that time.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from pipeline.errors import FieldError, ValidationFailed
from pipeline.events import ACTIVITY_STREAM, USER_SHARD_STREAM, user_shard

#: A Redis Stream entry id ("1700000000000-0"), or "0" for the oldest entry still kept. ASCII
#: digits only: Python's \d also takes other scripts' digits, which Redis refuses mid-stream.
_ENTRY_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
#: Each part of an entry id is an unsigned 64-bit integer in Redis.
_ENTRY_ID_PART_MAX = 2**64 - 1


@dataclass(frozen=True)
class Subscription:
    stream: str
    #: Entries of other users in the same shard are skipped; None for an activity's stream.
    user_id: str | None


@dataclass(frozen=True)
class FeedLimits:
    duration_max_s: float
    block_ms: int
    read_count_max: int

    def __post_init__(self):
        assert self.duration_max_s > 0 and 1 <= self.block_ms and 1 <= self.read_count_max


@dataclass(frozen=True)
class Delivery:
    """An event to send (`entry_id` and `event_json`), or a heartbeat (both None)."""

    entry_id: str | None = None
    event_json: str | None = None


class StreamReader(Protocol):
    def last_id(self, stream: str) -> str:
        """The id of the stream's newest entry, or "0-0" if it has none."""
    def trimmed_after(self, stream: str, after_id: str) -> bool:
        """Whether entries after `after_id` may have been trimmed away before they were read."""
    def read(self, stream: str, after_id: str, block_ms: int, count: int) -> list[tuple[str, str, str]]:
        """Up to `count` entries after `after_id` as (entry id, user id, event JSON), waiting up to
        `block_ms` for the first one; an empty list if none came."""


def for_user(user_id: str, shards: int) -> Subscription:
    return Subscription(USER_SHARD_STREAM.format(shard=user_shard(user_id, shards)), user_id)


def for_activity(activity_id: str) -> Subscription:
    return Subscription(ACTIVITY_STREAM.format(activity_id=activity_id), None)


def parse_last_event_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    match = _ENTRY_ID.fullmatch(value)
    if match is None or any(int(part) > _ENTRY_ID_PART_MAX for part in match.groups() if part):
        raise ValidationFailed("Last-Event-ID is not an event id this API sent",
                               [FieldError("Last-Event-ID", "must be a stream id such as 1700000000000-0")])
    return value


def follow(reader: StreamReader, subscription: Subscription, after_id: str | None, limits: FeedLimits,
           clock: Callable[[], float] = time.monotonic) -> Iterator[Delivery]:
    """The subscriber's events after `after_id` (or after the newest entry), then heartbeats, until
    `limits.duration_max_s` has passed."""
    position = after_id or reader.last_id(subscription.stream)
    deadline = clock() + limits.duration_max_s
    last_sent = clock()
    while (remaining_s := deadline - clock()) > 0:
        block_ms = max(1, min(limits.block_ms, int(remaining_s * 1000)))
        for entry_id, user_id, event_json in reader.read(subscription.stream, position, block_ms,
                                                         limits.read_count_max):
            position = entry_id
            if subscription.user_id is None or user_id == subscription.user_id:
                last_sent = clock()
                yield Delivery(entry_id, event_json)
        if clock() - last_sent >= limits.block_ms / 1000:
            last_sent = clock()
            yield Delivery()
