"""The completer writes outcomes in batches, and one the store refuses never holds back the rest.

The store is the memory engine, wrapped to refuse some writes: one ack it always
refuses, text it will not take, or every call while it is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from stagecrew import ErrorKind, FakeClock, JobState
from stagecrew.backends.base import Ack, AckKind
from stagecrew.backends.memory import MemoryBackend
from stagecrew.errors import BackendError
from stagecrew.job import AttemptError, Job, JobRef, NewJob
from stagecrew.worker import completer as completer_module
from stagecrew.worker.completer import Completer

PAYLOAD = '{"args":[],"kwargs":{}}'


class RefusingStore(MemoryBackend):
    """A memory store whose `ack` raises for any batch holding an ack that `refuses`."""

    def __init__(self, refuses: Callable[[Ack], bool] = lambda ack: False) -> None:
        super().__init__("memory://", FakeClock())
        self.refuses = refuses
        self.down_for_writes = 0
        """The store is down for this many more ack calls, and for the reads between them."""
        self._down = False
        self.writes: list[tuple[list[int], bool]] = []
        """Each ack call: the job ids it carried, and whether it was written."""

    async def ack_async(self, acks: Sequence[Ack]) -> list[bool]:
        self._down = self.down_for_writes > 0
        self.down_for_writes -= self._down
        refused = self._down or any(self.refuses(ack) for ack in acks)
        self.writes.append(([ack.ref.id for ack in acks], not refused))
        if refused:
            raise BackendError("the store refused the write")
        return self.ack(acks)

    async def get_async(self, job_id: int) -> Job | None:
        if self._down:
            raise BackendError("the store is down")
        return self.get(job_id)


def running_jobs(store: MemoryBackend, n: int) -> list[JobRef]:
    store.enqueue([NewJob(task="t", payload=PAYLOAD) for _ in range(n)])
    return [job.ref for job in store.claim(["default"], "w", n, 30)]


def completed(ref: JobRef) -> Ack:
    return Ack(ref, AckKind.COMPLETE, result=f"{ref.id}")


class Written:
    """The completer's `on_written`: records each ack and wakes whoever waits for a count."""

    def __init__(self) -> None:
        self.acks: list[Ack] = []
        self._changed = asyncio.Event()

    def __call__(self, ack: Ack, applied: bool) -> None:
        assert applied
        self.acks.append(ack)
        self._changed.set()

    async def reach(self, count: int) -> None:
        while len(self.acks) < count:
            self._changed.clear()
            await self._changed.wait()


async def run_until_written(
    store: RefusingStore, acks: list[Ack], count: int, then: Callable[[], bool] = lambda: True
) -> tuple[Completer, Written]:
    """Submit `acks` as one batch, run the completer until `count` are written and `then` holds."""
    written = Written()
    completer = Completer(store, written)
    for ack in acks:
        completer.submit(ack)
    flushing = asyncio.create_task(completer.run())
    try:
        async with asyncio.timeout(20):  # a wedged completer fails the test instead of hanging it
            await written.reach(count)
            while not then():
                await asyncio.sleep(0.01)
    finally:
        flushing.cancel()
    return completer, written


def test_an_ack_the_store_always_refuses_does_not_hold_back_the_others() -> None:
    store = RefusingStore()
    refs = running_jobs(store, 10)
    bad = refs[3]
    store.refuses = lambda ack: ack.ref.id == bad.id

    def retried_alone_twice() -> bool:
        return sum(1 for ids, _ in store.writes if ids == [bad.id]) >= 2

    completer, written = asyncio.run(
        run_until_written(store, [completed(ref) for ref in refs], 9, then=retried_alone_twice)
    )

    assert sorted(ack.ref.id for ack in written.acks) == sorted(r.id for r in refs if r != bad)
    states = {ref.id: store.get(ref.id).state for ref in refs}  # type: ignore[union-attr]
    assert states.pop(bad.id) is JobState.RUNNING  # still leased, still retried
    assert set(states.values()) == {JobState.SUCCEEDED}
    assert completer.pending == 1


def test_an_ack_whose_error_text_the_store_refuses_is_written_with_that_text_escaped() -> None:
    store = RefusingStore(
        refuses=lambda ack: ack.error is not None and not ack.error.message.isascii()
    )
    refs = running_jobs(store, 4)
    error = AttemptError(1, 0.0, ErrorKind.ERROR, "ValueError", "naïve → 失敗", "Traceback: naïve")
    acks = [completed(refs[0]), Ack(refs[1], AckKind.DEAD_LETTER, error=error)]
    acks += [completed(ref) for ref in refs[2:]]

    asyncio.run(run_until_written(store, acks, 4))

    dead = store.get(refs[1].id)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.errors[0].message == "na\\xefve \\u2192 \\u5931\\u6557"
    assert dead.errors[0].traceback == "Traceback: na\\xefve"
    assert [store.get(ref.id).state for ref in refs] == [  # type: ignore[union-attr]
        JobState.SUCCEEDED,
        JobState.DEAD,
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]


@pytest.mark.parametrize("batch", [1, 40])
def test_while_the_store_is_down_every_ack_waits_and_each_try_costs_one_write(batch: int) -> None:
    store = RefusingStore()
    refs = running_jobs(store, batch)
    tries = 3
    store.down_for_writes = tries

    _, written = asyncio.run(run_until_written(store, [completed(ref) for ref in refs], batch))

    assert sorted(ack.ref.id for ack in written.acks) == sorted(ref.id for ref in refs)
    failed = [ids for ids, ok in store.writes if not ok]
    assert len(failed) == tries  # one write per try, whatever the batch: no splitting while down
    assert all(ids == [ref.id for ref in refs] for ids in failed)  # in order, none set aside
    assert [ok for _, ok in store.writes] == [False] * tries + [True]


def test_an_outcome_the_store_keeps_refusing_ends_the_job_dead_with_a_last_resort_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A success whose result the store never takes must not keep its job leased for ever."""
    monkeypatch.setattr(completer_module, "SET_ASIDE_DELAYS", (0.01,) * 5)
    store = RefusingStore()
    refs = running_jobs(store, 3)
    bad = refs[1]
    store.refuses = lambda ack: ack.ref == bad and ack.kind is AckKind.COMPLETE

    asyncio.run(run_until_written(store, [completed(ref) for ref in refs], 3))

    dead = store.get(bad.id)
    assert dead is not None and dead.state is JobState.DEAD
    assert dead.errors[-1].type == "OutcomeRefused"
    assert "the store refused this attempt's outcome (complete)" in dead.errors[-1].message
    others = [store.get(ref.id).state for ref in refs if ref != bad]  # type: ignore[union-attr]
    assert others == [JobState.SUCCEEDED, JobState.SUCCEEDED]


class DroppingStore(RefusingStore):
    """Refuses the batch holding `bad`; when `bad` is retried alone, its claim is dropped meanwhile
    (a heartbeat reported its lease lost) and the fence refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: JobRef | None = None
        self.completer: Completer | None = None
        self.alone_tries = 0

    async def ack_async(self, acks: Sequence[Ack]) -> list[bool]:
        alone = [ack.ref for ack in acks] == [self.bad]
        self.alone_tries += alone
        if alone and self.alone_tries > 1:  # retried alone once set aside
            assert self.completer is not None and self.bad is not None
            self.completer.drop(self.bad)
            await asyncio.sleep(0)
            self.writes.append(([self.bad.id], True))
            return [False]
        if any(ack.ref == self.bad for ack in acks):
            self.writes.append(([ack.ref.id for ack in acks], False))
            raise BackendError("the store refused the write")
        return await super().ack_async(acks)


def test_a_claim_dropped_while_its_set_aside_outcome_is_written_leaves_the_completer_running() -> (
    None
):
    store = DroppingStore()
    refs = running_jobs(store, 3)
    store.bad = refs[0]
    seen: list[tuple[JobRef, bool]] = []
    later_written = asyncio.Event()

    def on_written(ack: Ack, applied: bool) -> None:
        seen.append((ack.ref, applied))
        if ack.ref == refs[2]:
            later_written.set()

    async def main() -> None:
        completer = Completer(store, on_written)
        store.completer = completer
        flushing = asyncio.create_task(completer.run())
        completer.submit(completed(refs[0]))
        completer.submit(completed(refs[1]))
        async with asyncio.timeout(20):
            while ([refs[0].id], True) not in store.writes:
                await asyncio.sleep(0.01)  # until the set-aside outcome was retried alone
            completer.submit(completed(refs[2]))  # a completer that died would never write it
            await later_written.wait()
        assert not flushing.done()
        flushing.cancel()

    asyncio.run(main())
    assert (refs[1], True) in seen and (refs[2], True) in seen
    assert store.get(refs[2].id).state is JobState.SUCCEEDED  # type: ignore[union-attr]


class GoesDownStore(RefusingStore):
    """Refuses `bad` twice while answering (so it is set aside), then is down for `outage`
    writes of it (reads fail too), then takes it."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.bad: JobRef | None = None
        self.calls = 0
        self.outage = outage

    async def ack_async(self, acks: Sequence[Ack]) -> list[bool]:
        if any(ack.ref == self.bad for ack in acks):
            self.calls += 1
            self._down = 2 < self.calls <= 2 + self.outage
            if self.calls <= 2 + self.outage:
                raise BackendError("refused" if not self._down else "the store is down")
        self._down = False
        return self.ack(acks)


def test_a_set_aside_outcome_is_not_given_up_while_the_store_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tries that fail because the store is down are not refusals: a success stays a success."""
    monkeypatch.setattr(completer_module, "SET_ASIDE_DELAYS", (0.01,) * 5)
    store = GoesDownStore(outage=3 * completer_module.LAST_RESORT_AFTER)
    refs = running_jobs(store, 2)
    store.bad = refs[0]

    asyncio.run(run_until_written(store, [completed(ref) for ref in refs], 2))

    assert store.calls > 2 + store.outage  # set aside, retried through the outage, then written
    assert [store.get(ref.id).state for ref in refs] == [JobState.SUCCEEDED] * 2  # type: ignore[union-attr]
