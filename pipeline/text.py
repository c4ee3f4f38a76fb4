"""Text that PostgreSQL can store.

JSON lets a client send a NUL character ("\\u0000") or a lone surrogate ("\\ud800");
PostgreSQL's `text` holds neither, so such a string would fail in the driver (a 500)
instead of being refused as invalid input (a 422 naming the field).
"""
from __future__ import annotations

from pipeline.errors import FieldError, IdempotencyKeyMissing, ValidationFailed

#: The longest Idempotency-Key, in characters (the column is text; the limit keeps keys keys).
IDEMPOTENCY_KEY_LENGTH_MAX = 255
#: The longest reason an operator's action (a cancel, a reject, a reversal) may give, in characters.
REASON_LENGTH_MAX = 500


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text`: no NUL character, and valid UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def parse_reason(reason: object, length_max: int = REASON_LENGTH_MAX) -> str:
    """An operator's `reason`, stripped. Raises ValidationFailed naming `reason` unless it is a
    text of 1 to `length_max` characters once stripped: every entry point (API, dashboard,
    command line) takes the same, so an empty reason never cancels or reverses anything."""
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= length_max or not storable(reason):
        raise ValidationFailed("reason is required", [FieldError(
            "reason", f"a text of 1 to {length_max} characters saying why")])
    return reason.strip()


def parse_idempotency_key(key: str | None, required: bool = True, field: str = "Idempotency-Key") -> str | None:
    """An Idempotency-Key, stripped; None when blank and not `required`. The same rule for
    every entry point (HTTP header, dashboard form, command line option), so a key the API
    refuses is never stored by another door. Raises IdempotencyKeyMissing (blank and
    `required`) and ValidationFailed naming `field` (longer than IDEMPOTENCY_KEY_LENGTH_MAX
    characters, or a character PostgreSQL cannot store)."""
    key = (key or "").strip()
    if not key:
        if required:
            raise IdempotencyKeyMissing("send an Idempotency-Key header with every money movement")
        return None
    if len(key) > IDEMPOTENCY_KEY_LENGTH_MAX:
        raise ValidationFailed(f"{field} is too long",
                               [FieldError(field, f"at most {IDEMPOTENCY_KEY_LENGTH_MAX} characters")])
    if not storable(key):
        raise ValidationFailed(f"{field} is not valid", [FieldError(field, "must not contain NUL")])
    return key
