"""OpenTelemetry spans for enqueue and execution, the trace context carried inside the job.

With the extra `stagecrew[otel]` (opentelemetry-api) installed and a tracer provider set up
by the application (the SDK, an exporter), enqueueing makes a PRODUCER span `send <queue>`
and writes the current trace context (W3C `traceparent`, `tracestate`) into the job's
payload; the worker that runs the job makes a CONSUMER span `process <queue>` whose parent is
that context, so a web request's trace continues into the job, and the task's own spans are
children of the `process` span (sync tasks run in a copy of its context). Attributes follow
the OpenTelemetry semantic conventions for messaging (`messaging.system`,
`messaging.operation.type`, `messaging.destination.name`, `messaging.message.id`, ...).

Without the package, or without a provider set up (the API's default), every call here is a
check and nothing more: no span is made and nothing is added to payloads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from ..backends.base import Ack, AckKind
from ..job import ClaimedJob
from ..serialization import unsigned_json

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError:  # stagecrew[otel] is not installed
    trace = None  # type: ignore[assignment]

log = logging.getLogger("stagecrew.tracing")

SYSTEM = "stagecrew"
CARRIED = frozenset({"traceparent", "tracestate"})
"""The trace context a job carries: W3C Trace Context only (a caller's baggage, which may hold
personal data, is never written into payloads)."""
FAILED_KINDS = frozenset({AckKind.RETRY, AckKind.DEAD_LETTER})


RECHECK_SECONDS = 1.0
"""While no tracer provider is set, how often `active` looks again (a look costs about a
microsecond, a job's enqueue and attempt each ask): a provider an application sets after
it started is seen within this long. Once set it stays (OpenTelemetry sets it only once)."""


class _ProviderWatch:
    """Whether an application has set a tracer provider, looked at once a second at most."""

    def __init__(self) -> None:
        self.set = False
        self._checked_at = -math.inf

    def active(self) -> bool:
        if self.set or trace is None:
            return self.set
        now = time.monotonic()
        if now - self._checked_at < RECHECK_SECONDS:
            return False
        self._checked_at = now
        self.set = not isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
        )
        return self.set


active = _ProviderWatch().active
"""Whether spans are made: the API is installed and an application set a provider."""


class Sending:
    """An enqueue's span: the carrier to store in the jobs, and their ids once written."""

    def __init__(self, span: Span | None, carrier: dict[str, str] | None) -> None:
        self._span = span
        self.carrier = carrier
        """The trace context to write into each job's payload (None: none to carry)."""

    def sent(self, ids: Sequence[int]) -> None:
        if self._span is not None and len(ids) == 1:
            with _guarded("a send span's message id"):
                self._span.set_attribute("messaging.message.id", str(ids[0]))


@contextlib.contextmanager
def sending(task: str, queue: str, count: int) -> Iterator[Sending]:
    """The `send` span around an enqueue (nothing when tracing is off); the trace context
    to carry is the W3C trace context alone (`CARRIED`), never the caller's baggage."""
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
        "stagecrew.task": task,
    }
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    opened = _open(f"send {queue}", SpanKind.PRODUCER, attributes) if active() else None
    if opened is None:
        yield Sending(None, None)
        return
    span, token = opened
    carrier: dict[str, str] = {}
    with _guarded("the trace context of an enqueue"):
        propagate.inject(carrier)
    kept = {k: v for k, v in carrier.items() if k in CARRIED}
    try:
        yield Sending(span, kept or None)
    except BaseException as exc:
        _failed(span, exc)
        raise
    finally:
        _close(span, token)


class Processing:
    """A job's `process` span, told the attempt's outcome when it ends."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def ended(self, ack: Ack | None) -> None:
        span = self._span
        if span is None:
            return
        with _guarded("a process span's outcome"):
            span.set_attribute("stagecrew.outcome", "none" if ack is None else str(ack.kind))
            if ack is not None and ack.kind in FAILED_KINDS and ack.error is not None:
                error = ack.error
                span.set_attribute("error.type", error.type)
                span.add_event(
                    "exception",
                    {"exception.type": error.type, "exception.message": error.message},
                )
                span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))


@contextlib.contextmanager
def processing(job: ClaimedJob) -> Iterator[Processing]:
    """The `process` span around one attempt, continuing the trace the job carries."""
    opened = None
    if active():
        parent = None
        with _guarded("the trace context a job carries"):
            parent = propagate.extract(carrier_of(job.payload))
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "stagecrew.task": job.task,
            "stagecrew.attempt": job.attempt,
        }
        opened = _open(f"process {job.queue}", SpanKind.CONSUMER, attributes, parent)
    if opened is None:
        yield Processing(None)
        return
    span, token = opened
    try:
        yield Processing(span)
    except BaseException as exc:
        _failed(span, exc)
        raise
    finally:
        _close(span, token)


def _open(
    name: str, kind: SpanKind, attributes: dict[str, Any], parent: Any = None
) -> tuple[Span, object] | None:
    """A started span made the current one, or None if the tracing library failed."""
    try:
        span = trace.get_tracer("stagecrew").start_span(
            name, context=parent, kind=kind, attributes=attributes
        )
        return span, otel_context.attach(trace.set_span_in_context(span))
    except Exception as exc:
        log.warning("tracing: could not start a %s span (%r); going on without it", name, exc)
        return None


def _close(span: Span, token: object) -> None:
    with _guarded("a span's end"):
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()


def _failed(span: Span, exc: BaseException) -> None:
    with _guarded("a span's error"):
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@contextlib.contextmanager
def _guarded(what: str) -> Iterator[None]:
    """Tracing never changes what a job does: the tracing library's failures are logged."""
    try:
        yield
    except Exception as exc:
        log.warning("tracing: %s failed (%r); going on without it", what, exc)


def carrier_of(payload: str) -> dict[str, str]:
    """The trace context a job's payload carries (empty if none, or if it cannot be read)."""
    try:
        value = orjson.loads(unsigned_json(payload))
        carried = value.get("trace") if isinstance(value, dict) else None
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(carried, dict):
        return {}
    return {k: v for k, v in carried.items() if k in CARRIED and isinstance(v, str)}
