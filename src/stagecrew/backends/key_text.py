"""The rules every key given as text follows (fairness keys, unique keys)."""

from __future__ import annotations


def check_key_text(key: object, where: str, limit: int, what: str) -> str | None:
    """`key` if it is usable text of at most `limit` bytes of UTF-8 (or None); raise
    `ValueError` naming `where`, and `what` (the kind of key) when it is empty."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise ValueError(f"{where} must be a str, not {type(key).__name__} {key!r}")
    if not key:
        raise ValueError(f"{where} must not be empty (give None for no {what})")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{where} must be valid UTF-8 text, got {key!r}") from None
    if size > limit:
        raise ValueError(f"{where} is {size} bytes of UTF-8; at most {limit} are allowed")
    if "\x00" in key:
        raise ValueError(f"{where} must not contain NUL characters, got {key!r}")
    return key
