"""Record decoding shared by the engines."""

from __future__ import annotations

import orjson

from ..job import AttemptError, ErrorKind


def _as_text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw if isinstance(raw, str) else repr(raw)


def _corrupt(raw: object, why: str) -> AttemptError:
    return AttemptError(
        attempt=0,
        at=0.0,
        kind=ErrorKind.ERROR,
        type="CorruptErrorRecord",
        message=f"the stored errors of this job could not be read ({why}); "
        "the stored text is kept as this entry's traceback",
        traceback=_as_text(raw),
    )


def decode_errors(raw: object) -> tuple[AttemptError, ...]:
    """Read a stored errors array without ever failing: inspection must work on a damaged job.

    Whatever cannot be read becomes a `CorruptErrorRecord` entry that keeps
    the stored text, so nothing is hidden and nothing raises.
    """
    if raw is None or raw in ("[]", b"[]"):
        return ()
    if not isinstance(raw, str | bytes):
        return (_corrupt(raw, f"a {type(raw).__name__}, not JSON text"),)
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return (_corrupt(raw, f"not valid JSON: {exc}"),)
    if not isinstance(items, list):
        return (_corrupt(raw, "not a JSON array"),)
    errors = []
    for item in items:
        try:
            errors.append(AttemptError.from_json(item))
        except (AttributeError, TypeError, ValueError) as exc:
            errors.append(_corrupt(orjson.dumps(item), f"a bad entry: {exc}"))
    return tuple(errors)
