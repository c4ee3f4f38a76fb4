"""Redis Streams for events: the publisher appends (`RedisEventLog`), subscribers read
(`RedisStreamReader`). Keys and the meaning of each stream are in `pipeline.events`.

Each entry has two fields, `user_id` (so a shard's reader skips other users without
parsing JSON) and `event` (the event as JSON).
"""
from __future__ import annotations

import json

import redis

from pipeline.config import Settings
from pipeline.events import ACTIVITY_STREAM, ALL_EVENTS_STREAM, USER_SHARD_STREAM, Event, user_shard

#: How long a Redis command may take beyond the time it was asked to block, in seconds.
REPLY_MARGIN_S = 5


class RedisEventLog:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.client = client
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> "RedisEventLog":
        return cls(redis.Redis.from_url(settings.redis_url, socket_timeout=REPLY_MARGIN_S, socket_connect_timeout=2),
                   settings)

    def append(self, events: list[Event]) -> None:
        """One MULTI/EXEC for the whole batch: a connection lost before EXEC appends nothing, so a
        batch sent again never lands after a later part of itself."""
        settings = self.settings
        pipe = self.client.pipeline(transaction=True)
        activities = set()
        for event in events:
            fields = {"user_id": event.user_id, "event": json.dumps(event.body, separators=(",", ":"))}
            pipe.xadd(ALL_EVENTS_STREAM, fields, maxlen=settings.events_stream_maxlen, approximate=True)
            pipe.xadd(USER_SHARD_STREAM.format(shard=user_shard(event.user_id, settings.events_user_shards)),
                      fields, maxlen=settings.events_user_shard_maxlen, approximate=True)
            if event.activity_id:
                key = ACTIVITY_STREAM.format(activity_id=event.activity_id)
                pipe.xadd(key, fields, maxlen=settings.events_activity_maxlen, approximate=True)
                activities.add(key)
        for key in sorted(activities):
            pipe.expire(key, settings.events_activity_ttl_s)
        pipe.execute()


class RedisStreamReader:
    def __init__(self, client: redis.Redis):
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> "RedisStreamReader":
        # The socket must outlast the longest XREAD BLOCK, or every quiet read would time out.
        timeout_s = settings.events_feed_block_ms / 1000 + REPLY_MARGIN_S
        return cls(redis.Redis.from_url(settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=2,
                                        decode_responses=True))

    def last_id(self, stream: str) -> str:
        newest = self.client.xrevrange(stream, count=1)
        return newest[0][0] if newest else "0-0"

    def trimmed_after(self, stream: str, after_id: str) -> bool:
        """Whether entries after `after_id` may have been trimmed away (MAXLEN) before anyone read
        them: something was trimmed, and `after_id` is older than the oldest entry kept."""
        try:
            info = self.client.xinfo_stream(stream)
        except redis.ResponseError:
            return False  # no such stream: nothing was ever trimmed from it
        if info["entries-added"] <= info["length"]:
            return False
        oldest_kept = info["first-entry"]
        if oldest_kept is None:  # trimmed down to nothing
            return _entry_id(after_id) < _entry_id(info["last-generated-id"])
        return _entry_id(after_id) < _entry_id(oldest_kept[0])

    def read(self, stream: str, after_id: str, block_ms: int, count: int) -> list[tuple[str, str, str]]:
        reply = self.client.xread({stream: after_id}, count=count, block=block_ms)
        if not reply:
            return []
        ((_, entries),) = reply
        return [(entry_id, fields.get("user_id", ""), fields["event"]) for entry_id, fields in entries]


def _entry_id(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
