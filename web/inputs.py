"""What a request may send, checked once for every route: body size, JSON bodies, query parameters.

`register` installs a hook that runs before any view (and before any token is looked up):

- Only the CSV uploads (`UPLOAD_ENDPOINTS`) take large bodies, up to BULK_CREDIT_MAX_BYTES; they
  bound their bodies themselves. Every other route, the dashboard's forms included, takes at most
  `REQUEST_BODY_MAX_BYTES`: a larger Content-Length is refused with 413 before a byte of the body
  is read, and a body without one (chunked) is read here, at most one byte past the limit, and
  refused with 413 past it (gunicorn sets `wsgi.input_terminated`, which lets Werkzeug bound such
  a stream).
- No query parameter may be given twice (`?limit=5&limit=abc`): Werkzeug would read the first
  and drop the rest silently, so the request is refused with 422 naming the parameter.

`json_object` reads a JSON body strictly: UTF-8, no NaN or Infinity, no duplicate keys, no
deep nesting, and an object at the top; anything else is a 400 `malformed_request`.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from pipeline.errors import FieldError, ValidationFailed
from web.problems import HttpProblem

#: The largest body any route but a CSV upload reads, in bytes. A JSON object or a dashboard
#: form of this API is a few hundred bytes; 1 MiB leaves ample room and bounds what a client
#: can make a process hold.
REQUEST_BODY_MAX_BYTES = 1024 * 1024
#: The routes that take a CSV file, up to BULK_CREDIT_MAX_BYTES; they bound their bodies themselves.
UPLOAD_ENDPOINTS = frozenset({"bulk_credit.upload_file", "dashboard.upload_file", "dashboard.check_file"})
#: How deeply a JSON body may nest; the API's bodies are flat objects (depth 1).
JSON_DEPTH_MAX = 16
#: Query parameters a route may take more than once; none does today.
REPEATABLE_QUERY_PARAMETERS: frozenset[str] = frozenset()


def register(app: Flask) -> None:
    """Runs `check_request` before every view; install it after the telemetry hook."""
    app.before_request(check_request)


def check_request() -> None:
    """Raises 413 (RequestEntityTooLarge) for a body past the route's limit and 422
    `validation_failed` for a repeated query parameter. The CSV uploads bound their own bodies
    (web/uploads.py, or Werkzeug's form parser under app.config's MAX_CONTENT_LENGTH)."""
    if request.endpoint not in UPLOAD_ENDPOINTS:
        _limit_body(REQUEST_BODY_MAX_BYTES)
    repeated = sorted(name for name, values in request.args.lists()
                      if len(values) > 1 and name not in REPEATABLE_QUERY_PARAMETERS)
    if repeated:
        raise ValidationFailed(f"query parameter {repeated[0]} is given more than once",
                               [FieldError(name, "give it at most once") for name in repeated])


def _limit_body(limit_bytes: int) -> None:
    """Refuses a declared Content-Length past `limit_bytes` before reading, and bounds any later read."""
    request.max_content_length = limit_bytes
    length = request.content_length
    if length is not None and length > limit_bytes:
        raise RequestEntityTooLarge(f"the body is {length} bytes; this route reads at most {limit_bytes} bytes")
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        _read_chunked_body(limit_bytes)


def _read_chunked_body(limit_bytes: int) -> None:
    """Reads a body sent without Content-Length now, at most one byte past the limit, and keeps it
    for the view (Werkzeug parses forms and JSON from the kept bytes). Werkzeug's bounded stream
    would stop at the limit and hand the view a body cut short, silently; one byte more tells."""
    request.max_content_length = limit_bytes + 1
    if len(request.get_data(cache=True)) > limit_bytes:
        raise RequestEntityTooLarge(f"the body is larger than this route reads: at most {limit_bytes} bytes")


def _malformed(detail: str, field: str = "body") -> HttpProblem:
    return HttpProblem(400, "malformed_request", detail, [{"field": field, "message": detail}])


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins, so an object that has both means two things.
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(f"the key {duplicate[:40]!r} appears more than once in one object")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} is too large for a number")
    return number


#: What a JSON value that is not an object is, in the words of a problem's detail.
_JSON_TYPES = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}


def _depth(value: Any) -> int:
    """How many levels of objects and arrays `value` has (1 for a flat object), without recursion;
    counting stops past JSON_DEPTH_MAX."""
    depth, level = 0, [value]
    while True:
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers or depth > JSON_DEPTH_MAX:
            return depth
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]


def json_object(required: bool = True) -> dict[str, Any]:
    """The request's body as a JSON object: `{}` for an empty body when not `required`.

    Raises HttpProblem 400 `malformed_request` for a body that is not a JSON object in UTF-8
    sent as application/json: another Content-Type, bytes that are not UTF-8, broken JSON,
    NaN or Infinity, a number too large for a float, a key twice in one object, nesting deeper
    than JSON_DEPTH_MAX, or an array, string, number or null at the top. The body's size is
    bounded by `check_request` (413 past it).
    """
    raw = request.get_data(cache=True)
    if not raw and not required:
        return {}
    if not request.is_json:
        raise _malformed("send the body as JSON, with Content-Type: application/json", "Content-Type")
    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except UnicodeDecodeError as error:
        raise _malformed(f"the body is not UTF-8 (byte {error.start})") from None
    except RecursionError:
        raise _malformed(f"the body nests more than {JSON_DEPTH_MAX} levels deep") from None
    except ValueError as error:  # json.JSONDecodeError, a duplicate key, NaN, an integer of 4,300+ digits
        raise _malformed(f"the body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(body, dict):
        raise _malformed(f"the body must be a JSON object, not {_JSON_TYPES.get(type(body), 'a number')}")
    if _depth(body) > JSON_DEPTH_MAX:
        raise _malformed(f"the body nests more than {JSON_DEPTH_MAX} levels deep")
    _refuse_unknown_fields(body)
    return body


def _refuse_unknown_fields(body: dict[str, Any]) -> None:
    """A field the operation does not take is a 422 naming it: a misspelt `row_numbers` or
    `amount` must never fall back to a default that moves more money (all rows, the whole
    hold, to `bank`). The fields are the documented body's (web/contract.py)."""
    from web.contract import documented_fields  # contract reads this module's limits

    allowed = documented_fields(request.method, request.url_rule.rule if request.url_rule else "")
    unknown = sorted(set(body) - allowed) if allowed is not None else []
    if unknown:
        raise ValidationFailed("the body has fields this operation does not take", [
            FieldError(name, f"unknown field: this operation takes {', '.join(sorted(allowed)) or 'no field'}")
            for name in unknown])


#: RFC 3339's date-time (section 5.6): nothing else, so `20261130T100000Z` or a week date is refused.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def rfc3339_field(raw: str | None, field: str) -> datetime | None:
    """A time sent as RFC 3339 with its offset (`2026-12-01T09:00:00Z`), in UTC; None when
    absent. Raises ValidationFailed naming `field`, for an empty value too."""
    if raw is None:
        return None
    text = raw.strip()
    try:
        if not RFC3339.fullmatch(text):
            raise ValueError(text)
        # A year-1 time at +14:00, or year 9999 at -14:00, is before or after what UTC can write.
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        hint = "; in a URL, write + as %2B" if RFC3339.fullmatch(text[:19] + "+" + text[20:]) else ""
        raise ValidationFailed(f"{field} is not valid", [FieldError(
            field, f"an RFC 3339 time with its offset, such as 2026-12-01T09:00:00Z{hint}")]) from None
