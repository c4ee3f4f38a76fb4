"""Text that PostgreSQL can store.

JSON lets a client send a NUL character ("\\u0000") or a lone surrogate ("\\ud800");
PostgreSQL's `text` holds neither, so such a string would fail in the driver (a 500)
instead of being refused as invalid input (a 422 naming the field).
"""
from __future__ import annotations


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text`: no NUL character, and valid UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True
