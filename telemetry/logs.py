"""JSON log lines with a request id, no secrets and no full emails.

`configure()` runs once per process at its entry point (the web app factory, the `actors`
package, the scheduler's main). Records get their request id when they are made (a log
record factory reads `REQUEST_ID`), so the id is in every line of a request or of a
message, and in the records pytest captures too.

Redaction is applied to the whole rendered line rather than trusted to each call site: a
database error can quote an email (`Key (email)=(...) already exists`), an exception can
quote a header.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import traceback
import uuid

#: The request id of the work this thread or task is doing, or None outside of any request.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

#: An incoming X-Request-Id is kept only if it looks like an id: no spaces, quotes or control
#: characters (which would let a client forge log fields) and at most 128 characters.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: The longest message a line keeps, in characters; the rest is cut so one huge value (a
#: statement over a 5,000-row array, say) cannot flood the log.
MESSAGE_CHARS_MAX = 4_000

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
#: Our API keys (`wp_` and 43 url-safe characters), wherever they appear.
_API_KEY = re.compile(r"\bwp_[A-Za-z0-9_-]{16,}")
_SECRET_FIELD = re.compile(r"(?i)(authorization|token|password|secret|api[_-]?key)")
#: Attributes every LogRecord has; anything else on a record was passed with `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

#: Loggers that say something on every routine step; kept at WARNING unless LOG_LEVEL is DEBUG.
#: (APScheduler logs two lines per job run, and the sweeps run every few seconds.)
ROUTINE_LOGGERS = ("apscheduler.executors.default", "apscheduler.scheduler")

_configured = False


def level_from_environ(environ=None) -> str:
    """LOG_LEVEL (DEBUG, INFO, WARNING, ERROR), INFO when unset."""
    level = (os.environ if environ is None else environ).get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    assert level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), f"LOG_LEVEL {level!r} is not a level"
    return level


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(candidate: str | None) -> str:
    """The incoming id if it is safe to log and to send on, else a new one."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


def redact(text: str) -> str:
    """Masks emails as a***@example.com and removes bearer tokens and API keys.

    Each pattern runs only when its cheap marker is in the line (`@`, `bearer`, `wp_`): most
    lines have none, and this runs on every line a process writes.
    """
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1 [redacted]", text)
    if "wp_" in text:
        text = _API_KEY.sub("wp_[redacted]", text)
    if "@" in text:
        text = _EMAIL.sub(r"\1***@\2", text)
    return text


def _with_request_id(factory):
    def make_record(*args, **kwargs):
        record = factory(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return record

    make_record.adds_request_id = True
    return make_record


def install_record_factory() -> None:
    """Makes every new LogRecord carry the current request id (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "adds_request_id", False):
        logging.setLogRecordFactory(_with_request_id(factory))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if len(message) > MESSAGE_CHARS_MAX:
            message = message[:MESSAGE_CHARS_MAX] + f"... [{len(message) - MESSAGE_CHARS_MAX} more characters]"
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRIBUTES or key == "request_id" or key.startswith("_"):
                continue
            line[key] = "[redacted]" if _SECRET_FIELD.search(key) else value
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            line["exception"] = record.exc_text
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class _JsonHandler(logging.StreamHandler):
    """Marks the handler this module installed, so a second configure() replaces it."""


def configure(level: str = "INFO", stream=None) -> None:
    """Sends every log record to `stream` (stderr) as a JSON line, at `level` and above.

    Called at each process's entry point; later calls only change the level. Handlers that
    plain `logging.basicConfig` installed (Dramatiq's worker processes install one) are
    replaced; any other handler (pytest's capture, say) is left alone.
    """
    global _configured
    install_record_factory()
    root = logging.getLogger()
    root.setLevel(level.upper())
    for name in ROUTINE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
    if _configured:
        return
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    handler = _JsonHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    _configured = True
