"""JSON codec for job payloads and results, and payload signing. Never pickle.

Only plain JSON values are accepted: dict (string keys), list, tuple (stored
as a list), str, int (64-bit), float (finite), bool and None. Anything else
(datetimes, dataclasses, sets, NaN, Infinity) is refused with a clear error
instead of being converted into something that comes back as a different type.

A signed payload (`App(signing_key=...)`) is the same JSON behind a prefix,
`sig:v1:<HMAC-SHA256 in hex>:<JSON>`, so no engine stores anything new.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .errors import ConfigurationError, PayloadTooLargeError, SerializationError, SignatureError

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
    trace: Mapping[str, str] | None = None,
) -> str:
    """The stored form of a job's arguments: `{"args": [...], "kwargs": {...}}`, and the
    trace context of its enqueue under "trace" when there is one (observability/tracing.py)."""
    if not isinstance(kwargs, dict):
        kwargs = dict(kwargs)
    value: dict[str, Any] = {"args": args, "kwargs": kwargs}
    if trace:
        value["trace"] = dict(trace)
    data = encode(value, what="job arguments")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"job arguments are {len(data)} bytes encoded, over the limit of {max_bytes}; "
            "store large data elsewhere (a file, a blob store) and pass a reference"
        )
    return data.decode()


def decode_payload(payload: str | bytes) -> tuple[list[Any], dict[str, Any]]:
    """Inverse of `encode_payload`; raises `SerializationError` on any malformed payload.

    A signed payload is read without checking its signature: verifying is the
    worker's job (`PayloadSigner.verify`), before it decodes.
    """
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        inner = _unsigned_part(payload)
        if inner is None:
            raise SerializationError(f"job payload is not valid JSON: {exc}") from None
        value = decode(inner, what="job payload")
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


SIGNED_PREFIX = "sig:v1:"
_DIGEST_HEX = 64
_HEADER = len(SIGNED_PREFIX) + _DIGEST_HEX + 1
MIN_KEY_BYTES = 16
SIGNING_KEYS_ENV = "STAGECREW_SIGNING_KEYS"


def unsigned_json(payload: str) -> str:
    """The JSON of a payload, signed or not (its signature unchecked)."""
    inner = _unsigned_part(payload)
    return payload if inner is None else inner


def _unsigned_part(payload: str | bytes) -> str | None:
    """The JSON inside a signed payload, or None if `payload` is not one."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode()
        except UnicodeDecodeError:
            return None
    if payload.startswith(SIGNED_PREFIX) and payload[_HEADER - 1 : _HEADER] == ":":
        return payload[_HEADER:]
    return None


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        raise ConfigurationError(f"a signing key must be bytes or str, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(
            f"a signing key must be at least {MIN_KEY_BYTES} bytes; "
            "make one with python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return key


class PayloadSigner:
    """HMAC-SHA256 over a job's task name and payload: the first key signs, every key verifies.

    Keeping the old key after the new one (`[new, old]`) lets jobs signed before
    a rotation still run; drop it once they have.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise ConfigurationError("give at least one signing key")
        self._keys = tuple(_key_bytes(k) for k in keys)

    @classmethod
    def configured(
        cls, signing_key: bytes | str | Sequence[bytes | str] | None, environ: Mapping[str, str]
    ) -> PayloadSigner | None:
        """The signer for `App(signing_key=...)`, else for STAGECREW_SIGNING_KEYS, else None."""
        if signing_key is None:
            listed = [k.strip() for k in environ.get(SIGNING_KEYS_ENV, "").split(",")]
            keys: Sequence[bytes | str] = [k for k in listed if k]
            return cls(keys) if keys else None
        if isinstance(signing_key, bytes | str):
            return cls([signing_key])
        return cls(list(signing_key))

    def __repr__(self) -> str:
        return f"<PayloadSigner keys={len(self._keys)}>"

    @staticmethod
    def _message(task: str, payload: str) -> bytes:
        name = task.encode("utf-8", "surrogatepass")
        return b"%d:%s%s" % (len(name), name, payload.encode("utf-8", "surrogatepass"))

    def sign(self, task: str, payload: str) -> str:
        digest = hmac.digest(self._keys[0], self._message(task, payload), "sha256")
        return f"{SIGNED_PREFIX}{digest.hex()}:{payload}"

    def verify(self, task: str, payload: str) -> str:
        """The JSON a signed payload carries; raises `SignatureError` unless a key signed it."""
        if not payload.startswith(SIGNED_PREFIX):
            raise SignatureError(
                "signature invalid: the job is not signed, and this app accepts signed jobs "
                "only (App(signing_key=...)); it was not enqueued by a producer holding the key"
            )
        try:
            if payload[_HEADER - 1 : _HEADER] != ":":
                raise ValueError
            signature = bytes.fromhex(payload[len(SIGNED_PREFIX) : _HEADER - 1])
        except ValueError:
            raise SignatureError("signature invalid: the signature envelope is malformed") from None
        inner = payload[_HEADER:]
        message = self._message(task, inner)
        for key in self._keys:
            if hmac.compare_digest(hmac.digest(key, message, "sha256"), signature):
                return inner
        raise SignatureError(
            "signature invalid: the payload or task name changed after signing, "
            "or it was signed with a key this app does not hold"
        )
