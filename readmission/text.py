"""Text for people: messages made from exceptions."""

from __future__ import annotations


def short_error(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most `limit` characters; its type's
    name when it has no message (logs, 503 bodies, registry tags)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
