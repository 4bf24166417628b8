"""JSON codec for job payloads and results. Never pickle.

Only plain JSON values are accepted: dict (string keys), list, tuple (stored
as a list), str, int (64-bit), float (finite), bool and None. Anything else
(datetimes, dataclasses, sets, NaN, Infinity) is refused with a clear error
instead of being converted into something that comes back as a different type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from .errors import PayloadTooLargeError, SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

_ENCODE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _find_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_find_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_find_non_finite(v) for v in value)
    return False


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode a JSON value; raise `SerializationError` naming `what` otherwise."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_ENCODE_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(
            f"{what} cannot be stored as JSON: {exc}; pass plain JSON values "
            "(dict, list, str, int, float, bool, None) and convert others yourself"
        ) from None
    # orjson writes NaN and Infinity as null; only then is a walk needed to refuse them.
    if b"null" in data and _find_non_finite(value):
        raise SerializationError(f"{what} cannot be stored as JSON: NaN and Infinity are not JSON")
    return data


def decode(data: bytes | str, *, what: str = "value") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"{what} is not valid JSON: {exc}") from None


def encode_payload(
    args: list[Any] | tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> str:
    """The stored form of a job's arguments: `{"args": [...], "kwargs": {...}}`."""
    if not isinstance(kwargs, dict):
        kwargs = dict(kwargs)
    data = encode({"args": args, "kwargs": kwargs}, what="job arguments")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"job arguments are {len(data)} bytes encoded, over the limit of {max_bytes}; "
            "store large data elsewhere (a file, a blob store) and pass a reference"
        )
    return data.decode()


def decode_payload(payload: str | bytes) -> tuple[list[Any], dict[str, Any]]:
    """Inverse of `encode_payload`; raises `SerializationError` on any malformed payload."""
    value = decode(payload, what="job payload")
    try:
        args = value["args"]
        kwargs = value["kwargs"]
    except (KeyError, TypeError):
        args = kwargs = None
    if type(args) is not list or type(kwargs) is not dict:
        raise SerializationError(
            "job payload must be a JSON object holding a list 'args' and an object 'kwargs'"
        )
    return args, kwargs
