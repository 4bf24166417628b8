"""The front layer: rules every engine gets from `Backend`, written once.

An engine here is the memory engine, with its operations recorded, so each test sees what
the front layer handed to the engine (or that it handed nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from stagecrew.backends.base import Ack, AckKind, JobFilter, Retention
from stagecrew.backends.caps import ClaimLimits
from stagecrew.backends.memory import MemoryBackend
from stagecrew.backends.ops import Op, immediate
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError, EnqueueError, InvalidTimeError
from stagecrew.job import ClaimedJob, EnqueuedJob, JobRef, NewJob

T = TypeVar("T")


class Recording(MemoryBackend):
    """The memory engine, noting what reached its operations and its one wrapper."""

    def __init__(self) -> None:
        super().__init__(clock=FakeClock(1000.0))
        self.enqueued: list[tuple[NewJob, ...]] = []
        self.claimed: list[tuple[str, ...]] = []
        self.limits: list[ClaimLimits | None] = []
        self.calls: list[str] = []

    def _enqueue(self, jobs: Sequence[NewJob]) -> Op[list[EnqueuedJob]]:
        self.enqueued.append(tuple(jobs))
        return super()._enqueue(jobs)

    def _claim(
        self,
        queues: tuple[str, ...],
        worker: str,
        limit: int,
        lease_seconds: float,
        limits: ClaimLimits | None = None,
    ) -> Op[list[ClaimedJob]]:
        self.claimed.append(queues)
        self.limits.append(limits)
        return super()._claim(queues, worker, limit, lease_seconds, limits)

    def _call(self, operation: str, op: Op[T], driver: Callable[[Op[T]], T] | None = None) -> T:
        self.calls.append(operation)
        return super()._call(operation, op, driver)

    async def _call_async(
        self,
        operation: str,
        op: Op[T],
        driver: Callable[[Op[T]], Awaitable[T]] | None = None,
    ) -> T:
        self.calls.append(f"{operation} (async)")
        return await super()._call_async(operation, op, driver)


def job(key: str | None = None, queue: str = "default", priority: int = 0) -> NewJob:
    return NewJob(
        task="t",
        payload='{"args":[],"kwargs":{}}',
        queue=queue,
        priority=priority,
        idempotency_key=key,
    )


def test_a_key_repeated_within_a_batch_reaches_the_engine_once_and_maps_to_the_first_job() -> None:
    backend = Recording()
    out = backend.enqueue([job("a"), job(), job("a"), job("b"), job("b")])
    [sent] = backend.enqueued
    assert [j.idempotency_key for j in sent] == ["a", None, "b"]
    assert [e.created for e in out] == [True, True, False, True, False]
    assert out[2].id == out[0].id and out[4].id == out[3].id
    assert len({e.id for e in out}) == 3


def test_an_engine_whose_keys_are_per_queue_gets_a_key_once_per_queue() -> None:
    backend = Recording()
    backend._keys_per_queue = True
    out = backend.enqueue([job("k", queue="a"), job("k", queue="b"), job("k", queue="a")])
    [sent] = backend.enqueued
    assert [(j.queue, j.idempotency_key) for j in sent] == [("a", "k"), ("b", "k")]
    # what the engine answers for the second is its own (the memory engine keeps its keys
    # store-wide); the third is the front's repeat of the first
    assert (out[0].created, out[2].created) == (True, False)
    assert out[2].id == out[0].id


def test_empty_batches_and_empty_claims_never_reach_the_engine() -> None:
    backend = Recording()
    assert backend.enqueue([]) == []
    assert backend.ack([]) == []
    assert backend.claim([], "w", 10, 30.0) == []
    assert backend.claim(["default"], "w", 0, 30.0) == []
    assert backend.prune(Retention(), limit=0) == 0
    assert backend.list_jobs(JobFilter(limit=0)) == []
    assert backend.next_run_at([]) is None
    reply = backend.heartbeat("w", [], 30.0)
    assert reply.lost == frozenset() and reply.cancel_requested == frozenset()
    assert backend.calls == []


def test_a_claim_names_each_queue_once_and_returns_jobs_in_priority_run_at_id_order() -> None:
    backend = Recording()
    backend.enqueue([job(queue="b", priority=5), job(queue="a", priority=1), job(queue="b")])
    claimed = backend.claim(["b", "a", "b", "a"], "w", 10, 30.0)
    assert backend.claimed == [("b", "a")]
    assert [(c.priority, c.id) for c in claimed] == [(0, 3), (1, 2), (5, 1)]


def test_a_claim_hands_the_engine_only_the_caps_of_the_queues_it_claims_from() -> None:
    backend = Recording()
    backend.claim(["a"], "w", 1, 30.0, ClaimLimits(queues={"b": 2}))
    backend.claim(["a"], "w", 1, 30.0, ClaimLimits(queues={"a": 2, "b": 2}))
    backend.claim(["a"], "w", 1, 30.0, ClaimLimits(tasks={"t": 1}))
    backend.claim(["a"], "w", 1, 30.0)
    assert backend.limits == [
        None,
        ClaimLimits(queues={"a": 2}),
        ClaimLimits(tasks={"t": 1}),
        None,
    ]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda b: b.claim("default", "w", 1, 30.0), TypeError),
        (lambda b: b.claim(["default"], "w", 1, 30.0, {"tasks": {"t": 1}}), TypeError),
        (lambda b: b.claim(["default"], "", 1, 30.0), ValueError),
        (lambda b: b.claim(["default"], "w", 1, float("nan")), InvalidTimeError),
        (lambda b: b.heartbeat("w", [JobRef(1, 1)], float("inf")), InvalidTimeError),
        (lambda b: b.ack(["complete"]), TypeError),
        (lambda b: b.rescue(0), ValueError),
        (lambda b: b.release_worker("", 3), ValueError),
        (lambda b: b.enqueue([job(), "not a job"]), TypeError),
        (lambda b: b.heartbeat("w", [(1, 1)], 30.0), TypeError),
        (lambda b: b.get("1"), TypeError),
        (lambda b: b.cancel(True), TypeError),
        (lambda b: b.wait_finished(1.5, 1.0), TypeError),
        (lambda b: b.prune({"succeeded": 1.0}), TypeError),
        (lambda b: b.prune(Retention(), limit=2.5), ValueError),
        (lambda b: b.claim(["default"], "w", True, 30.0), ValueError),
        (lambda b: asyncio.run(b.wait(["default"], float("nan"))), InvalidTimeError),
    ],
)
def test_bad_input_is_refused_before_the_engine_sees_anything(
    call: Callable[[Recording], object], error: type[Exception]
) -> None:
    backend = Recording()
    with pytest.raises(error):
        call(backend)
    assert backend.calls == [] and backend.enqueued == []


class Refusing(MemoryBackend):
    """An engine whose store fails every operation, as a client library raises it."""

    _store_errors = (ConnectionError,)

    def _describe_failure(self, operation: str, exc: BaseException) -> str:
        return f"{operation} failed on the test store: {exc}"

    @immediate
    def _enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        raise ConnectionError("the store went away")

    @immediate
    def _stats(self) -> Any:
        raise ConnectionError("the store went away")

    @immediate
    def _get(self, job_id: int) -> Any:
        raise BackendError("refused by the engine itself")


def test_an_ack_must_name_its_claim_by_a_job_ref() -> None:
    with pytest.raises(ValueError, match="JobRef"):
        Ack((1, 1), AckKind.COMPLETE)  # type: ignore[arg-type]


def test_a_store_failure_becomes_enqueue_error_on_enqueue_and_backend_error_elsewhere() -> None:
    backend = Refusing()
    with pytest.raises(EnqueueError, match="enqueue failed on the test store: the store went"):
        backend.enqueue([job()])
    with pytest.raises(EnqueueError, match="enqueue failed"):
        asyncio.run(backend.enqueue_async([job()]))
    with pytest.raises(BackendError, match="stats failed on the test store") as raised:
        backend.stats()
    assert not isinstance(raised.value, EnqueueError)
    assert isinstance(raised.value.__cause__, ConnectionError)
    with pytest.raises(BackendError, match="refused by the engine itself"):
        backend.get(1)


def test_every_public_operation_passes_through_the_one_wrapper_sync_and_async() -> None:
    backend = Recording()
    [first] = backend.enqueue([job()])
    [claimed] = backend.claim(["default"], "w", 1, 30.0)
    backend.heartbeat("w", [claimed.ref], 30.0)
    backend.ack([Ack.complete(claimed.ref)])
    backend.rescue()
    backend.release_worker("w")
    backend.prune(Retention())
    backend.get(first.id)
    backend.list_jobs(JobFilter())
    backend.stats()
    backend.cancel(first.id)
    backend.requeue(JobFilter(ids=frozenset({first.id})))
    backend.purge(JobFilter(ids=frozenset({first.id})))
    backend.next_run_at()
    sync = list(backend.calls)
    backend.calls.clear()

    async def run_async() -> None:
        [second] = await backend.enqueue_async([job()])
        [again] = await backend.claim_async(["default"], "w", 1, 30.0)
        await backend.heartbeat_async("w", [again.ref], 30.0)
        await backend.ack_async([Ack.complete(again.ref)])
        await backend.rescue_async()
        await backend.release_worker_async("w")
        await backend.prune_async(Retention())
        await backend.get_async(second.id)
        await backend.list_jobs_async(JobFilter())
        await backend.stats_async()
        await backend.cancel_async(second.id)
        await backend.requeue_async(JobFilter(ids=frozenset({second.id})))
        await backend.purge_async(JobFilter(ids=frozenset({second.id})))
        await backend.next_run_at_async()

    asyncio.run(run_async())
    names = [
        "enqueue", "claim", "heartbeat", "ack", "rescue", "release_worker", "prune", "get",
        "list_jobs", "stats", "cancel", "requeue", "purge", "next_run_at",
    ]  # fmt: skip
    assert sync == names
    assert backend.calls == [f"{name} (async)" for name in names]
