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
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from ..backends.base import Ack, AckKind
from ..job import ClaimedJob
from ..serialization import unsigned_json

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError:  # stagecrew[otel] is not installed
    trace = None  # type: ignore[assignment]

SYSTEM = "stagecrew"
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
            self._span.set_attribute("messaging.message.id", str(ids[0]))


@contextlib.contextmanager
def sending(task: str, queue: str, count: int) -> Iterator[Sending]:
    if not active():
        yield Sending(None, None)
        return
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
        "stagecrew.task": task,
    }
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    tracer = trace.get_tracer("stagecrew")
    with tracer.start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield Sending(span, carrier or None)


class Processing:
    """A job's `process` span, told the attempt's outcome when it ends."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def ended(self, ack: Ack | None) -> None:
        span = self._span
        if span is None:
            return
        span.set_attribute("stagecrew.outcome", "none" if ack is None else str(ack.kind))
        if ack is not None and ack.kind in FAILED_KINDS and ack.error is not None:
            error = ack.error
            span.set_attribute("error.type", error.type)
            span.add_event(
                "exception", {"exception.type": error.type, "exception.message": error.message}
            )
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))


@contextlib.contextmanager
def processing(job: ClaimedJob) -> Iterator[Processing]:
    if not active():
        yield Processing(None)
        return
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
    tracer = trace.get_tracer("stagecrew")
    with tracer.start_as_current_span(
        f"process {job.queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield Processing(span)


def carrier_of(payload: str) -> dict[str, str]:
    """The trace context a job's payload carries (empty if none, or if it cannot be read)."""
    try:
        value = orjson.loads(unsigned_json(payload))
        carried = value.get("trace") if isinstance(value, dict) else None
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(carried, dict):
        return {}
    return {str(k): str(v) for k, v in carried.items() if isinstance(v, str)}
