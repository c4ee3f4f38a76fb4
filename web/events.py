"""`GET /api/v1/events?user_id=` or `?activity_id=`: events as Server-Sent Events.

A user's token may follow only its own user; an activity needs operator or admin. The
response is a generator that holds no database connection, only a Redis connection
blocked in XREAD for at most `EVENTS_FEED_BLOCK_MS`; it ends after
`EVENTS_FEED_DURATION_MAX_S` and the client resumes with `Last-Event-ID` (header, or the
`last_event_id` query parameter for a first connection). Each open feed holds one gthread
thread and one slot of the process's stream budget (web/stream_slots.py, shared with the
dashboard's streams); with every slot taken the answer is 503 `too_many_event_streams` with
Retry-After, at once, keeping threads for the other requests.
"""
from __future__ import annotations

import json
from typing import Callable, Iterator

import redis
from apiflask import APIBlueprint
from flask import Response, current_app, g, request

from pipeline import event_feed
from pipeline.bulk.chunks import parse_activity_id
from pipeline.errors import FieldError, ValidationFailed
from pipeline.wallets import parse_user_id
from storage.event_streams import RedisStreamReader
from web.auth import allow, authenticated
from web import stream_slots
from web.problems import HttpProblem, problem, problem_response

blueprint = APIBlueprint("events", __name__, url_prefix="/api/v1", tag="Events")

#: How long an EventSource waits before reconnecting after a feed ends, in milliseconds.
RECONNECT_MS = 1_000
#: Retry-After of a feed refused because every stream slot is taken, in seconds.
BUSY_RETRY_AFTER_S = 5


def _reader() -> RedisStreamReader:
    extensions = current_app.extensions
    if "wallet_events" not in extensions:
        # A race here makes a spare client once; setdefault keeps exactly one.
        extensions.setdefault("wallet_events", RedisStreamReader.from_settings(extensions["wallet"].settings))
    return extensions["wallet_events"]


def _subscription(settings) -> event_feed.Subscription:
    user_id, activity_id = request.args.get("user_id"), request.args.get("activity_id")
    if (user_id is None) == (activity_id is None):
        raise ValidationFailed("give exactly one of user_id and activity_id",
                               [FieldError("user_id", "or activity_id, not both and not neither")])
    if user_id is not None:
        user_id = parse_user_id(user_id, "user_id")
        allow(g.principal.may_read_user(user_id))
        return event_feed.for_user(user_id, settings.events_user_shards)
    activity_id = parse_activity_id(activity_id)
    allow(g.principal.may_read_all())
    return event_feed.for_activity(activity_id)


def _sse(deliveries: Iterator[event_feed.Delivery], gap_after: str | None) -> Iterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    if gap_after is not None:
        # Never a silent loss: the stream keeps its newest entries only, and some the client
        # had not read are gone. It fills the gap from the history, then carries on from here.
        yield ("event: gap\ndata: " + json.dumps({"last_event_id": gap_after, "detail": (
            "events after this id were trimmed from the stream before they were read: read the"
            " history (GET /api/v1/users/{user_id}/transactions) for what happened meanwhile")}) + "\n\n")
    for delivery in deliveries:
        if delivery.entry_id is None:
            yield ": heartbeat\n\n"
        else:
            yield f"id: {delivery.entry_id}\ndata: {delivery.event_json}\n\n"


@blueprint.get("/events")
@authenticated
def follow_events():
    settings = current_app.extensions["wallet"].settings
    return feed_response(settings, _subscription(settings), _busy_problem)


def _busy_problem(capacity: int) -> Response:
    return problem_response(
        problem(503, "too_many_event_streams", f"this process already serves {capacity} streams;"
                                               f" try again in {BUSY_RETRY_AFTER_S} s"),
        {"Retry-After": str(BUSY_RETRY_AFTER_S)})


def feed_response(settings, subscription: event_feed.Subscription,
                  busy: Callable[[int], Response]) -> Response:
    """The subscription's events as a text/event-stream response, from the request's
    Last-Event-ID (header, or `last_event_id` query parameter); `busy(capacity)` answers when
    every stream slot of this process is taken. The dashboard's user page uses it too, with the
    user's own subscription and the session's authentication."""
    # Both are checked, so a bad one is refused even when the other (the header, first) is used.
    from_header, from_query = (event_feed.parse_last_event_id(request.headers.get("Last-Event-ID")),
                               event_feed.parse_last_event_id(request.args.get("last_event_id")))
    after_id = from_header or from_query
    reader = _reader()
    try:
        # Resolved now, before the client sees a response: everything published after it has
        # its headers reaches it.
        asked_after = after_id
        after_id = after_id or reader.last_id(subscription.stream)
        # "0" asks for the oldest entry kept, whatever was trimmed before it.
        gap = asked_after not in (None, "0") and reader.trimmed_after(subscription.stream, asked_after)
    except redis.RedisError as error:
        raise HttpProblem(503, "temporarily_unavailable", f"the event streams are unreachable: {type(error).__name__}")
    budget = stream_slots.slots()
    release = budget.take()
    if release is None:
        return busy(budget.capacity)
    limits = event_feed.FeedLimits(settings.events_feed_duration_max_s, settings.events_feed_block_ms,
                                   settings.events_feed_read_count_max)
    body = stream_slots.SlotBody(_sse(event_feed.follow(reader, subscription, after_id, limits),
                                     asked_after if gap else None), release)
    return Response(body, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
