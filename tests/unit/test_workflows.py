"""Workflows on the test kit: the docs' example, the shapes that nest and those that do not,
and the pure fan-in decision."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from stagecrew import App, WorkflowStatus, chain, chord, group
from stagecrew.backends.base import AckKind
from stagecrew.backends.workflows import (
    Member,
    OnFailure,
    Verdict,
    WorkflowStep,
    decide,
    settled_early,
)
from stagecrew.errors import ConfigurationError
from stagecrew.job import AttemptError, ErrorKind, JobState
from stagecrew.testing import TestKit
from stagecrew.worker.runner import Worker

app = App()


@app.task
def fetch(url: str) -> int:
    return len(url)


@app.task
def total(sizes: list[int]) -> int:
    return sum(sizes)


@app.task
def report(size: int, unit: str = "bytes") -> str:
    return f"{size} {unit}"


def test_the_docs_example_runs_on_the_test_kit() -> None:
    with TestKit(app) as kit:
        flow = chain(fetch.s("https://example.com"), report.s(unit="chars")).enqueue()
        sizes = group(fetch.s("a"), fetch.s("bb"), fetch.s("ccc")).enqueue()
        summary = chord(group(fetch.s("a"), fetch.s("bb")), total.s()).enqueue()
        assert summary.state() is WorkflowStatus.RUNNING
        kit.run_until_idle(advance_time=True)  # held members are never "due later"
        assert flow.result(timeout=1) == "19 chars"
        assert sizes.result(timeout=1) == [1, 2, 3]
        assert summary.result(timeout=1) == 3


def test_shapes_that_do_not_nest_are_refused_when_built() -> None:
    with pytest.raises(TypeError, match="not supported"):
        group(chord(group(fetch.s("a")), total.s()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header"):
        chord(fetch.s("a"), total.s())
    with pytest.raises(TypeError, match="callback"):
        chord(group(fetch.s("a")), group(total.s()))
    with pytest.raises(TypeError, match="chain holds"):
        chain(fetch)
    with pytest.raises(ConfigurationError, match="on_failure"):
        chain(fetch.s("a"), on_failure="ignore")
    with pytest.raises(ConfigurationError, match="at least one"):
        group()


def test_a_workflow_of_two_apps_is_refused() -> None:
    other = App("memory://")

    @other.task(name="elsewhere")
    def elsewhere(x: int) -> int:
        return x

    with TestKit(app), pytest.raises(ConfigurationError, match="one App"):
        chain(fetch.s("a"), elsewhere.s()).enqueue()


SHAPE = (WorkflowStep(True, 2), WorkflowStep(False, 1))
BOOM = AttemptError(1, 0.0, ErrorKind.ERROR, "ValueError", "boom")


def member(index: int, state: JobState, result: str | None = None) -> Member:
    return Member(index, state, result, BOOM if state is JobState.DEAD else None)


def test_decide_waits_advances_and_finishes() -> None:
    running = [member(0, JobState.SUCCEEDED, "1"), member(1, JobState.RUNNING)]
    assert decide(SHAPE, 0, OnFailure.FAIL, running).verdict is Verdict.WAIT
    done = [member(1, JobState.SUCCEEDED, "2"), member(0, JobState.SUCCEEDED, "1")]
    advance = decide(SHAPE, 0, OnFailure.FAIL, done)
    assert (advance.verdict, advance.output) == (Verdict.ADVANCE, "[1,2]")
    finish = decide(SHAPE, 1, OnFailure.FAIL, [member(0, JobState.SUCCEEDED, None)])
    assert (finish.verdict, finish.output, finish.status) == (
        Verdict.FINISH,
        "null",
        WorkflowStatus.SUCCEEDED,
    )
    assert decide(SHAPE, 0, OnFailure.FAIL, done[:1]).verdict is Verdict.WAIT  # one is gone


def test_decide_fails_at_once_or_passes_outcomes_on() -> None:
    failed = [member(0, JobState.DEAD), member(1, JobState.RUNNING)]
    assert decide(SHAPE, 0, OnFailure.FAIL, failed).verdict is Verdict.FAIL
    assert decide(SHAPE, 0, OnFailure.CONTINUE, failed).verdict is Verdict.WAIT
    ended = [member(0, JobState.DEAD), member(1, JobState.CANCELLED)]
    advance = decide(SHAPE, 0, OnFailure.CONTINUE, ended)
    assert advance.output == (
        '[{"state":"dead","error":{"type":"ValueError","message":"boom"}},'
        '{"state":"cancelled","error":null}]'
    )
    last = decide(SHAPE, 1, OnFailure.CONTINUE, [member(0, JobState.DEAD)])
    assert (last.verdict, last.status) == (Verdict.FINISH, WorkflowStatus.FAILED)


def test_the_early_probe_agrees_with_decide() -> None:
    assert settled_early(OnFailure.FAIL, True, True).verdict is Verdict.FAIL  # type: ignore[union-attr]
    assert settled_early(OnFailure.CONTINUE, True, True).verdict is Verdict.WAIT  # type: ignore[union-attr]
    assert settled_early(OnFailure.FAIL, False, False) is None


def test_a_chain_runs_with_signed_payloads() -> None:
    """The step's input is passed by the worker, not written into the signed payload."""
    signed = App(signing_key="k" * 32)

    @signed.task(name="one")
    def one() -> int:
        return 1

    @signed.task(name="plus")
    def plus(x: int, y: int) -> int:
        return x + y

    with TestKit(signed) as kit:
        handle = chain(one.s(), plus.s(41)).enqueue()
        assert kit.backend.get(handle.get().members[1].id).payload.startswith("sig:")  # type: ignore[union-attr]
        kit.run_until_idle()
        assert handle.result(timeout=1) == 42


def acks_written(kit: TestKit) -> list[tuple[int, AckKind, bool]]:
    """From here on, each ack the kit's store is sent, as (job id, kind, marked in_workflow)."""
    sent: list[tuple[int, AckKind, bool]] = []
    ack_async = kit.backend.ack_async

    async def spy(acks: Any) -> list[bool]:
        sent.extend((a.ref.id, a.kind, a.in_workflow) for a in acks)
        return await ack_async(acks)

    kit.backend.ack_async = spy  # type: ignore[method-assign]
    return sent


def test_a_member_held_back_for_a_rate_limit_token_is_marked_too() -> None:
    """The hand-back of a member that found no token (booked for later, its attempt given
    back) is a member's outcome like any other: marked, so a cancel it may turn into joins the
    fan-in's transaction on PostgreSQL."""
    limited = App()

    @limited.task(name="limited", rate_limit="1/h")
    def limited_task(i: int) -> int:
        return i

    with TestKit(limited) as kit:
        sent = acks_written(kit)
        flow = group(limited_task.s(1), limited_task.s(2)).enqueue()
        kit.run_until_idle()
        members = {j.id for j in flow.get().members}
        assert sorted(kind for _, kind, _ in sent) == sorted([AckKind.COMPLETE, AckKind.RELEASE])
        assert {job_id for job_id, _, _ in sent} == members
        assert all(marked for _, _, marked in sent)


def test_a_member_handed_back_at_shutdown_is_marked_too() -> None:
    """A sync member still running when the grace period ends is handed back (its thread
    cannot be interrupted): that release is a member's outcome, marked like the others."""
    stuck = App()
    started, release = threading.Event(), threading.Event()

    @stuck.task(name="stuck", max_attempts=1)
    def stuck_task() -> None:
        started.set()
        release.wait(10)

    with TestKit(stuck) as kit:
        sent = acks_written(kit)
        flow = group(stuck_task.s()).enqueue()

        async def main() -> None:
            worker = Worker(stuck, concurrency=1, lease_seconds=5, grace=0.1, poll_interval=0.01)
            run = asyncio.create_task(worker.run(install_signal_handlers=False))
            await asyncio.to_thread(started.wait, 5)
            worker.request_stop()
            await asyncio.wait_for(run, 10)

        try:
            asyncio.run(main())
        finally:
            release.set()
        first = flow.get().members[0].id
        assert sent == [(first, AckKind.RELEASE, True)]


def test_the_worker_marks_a_members_outcome_as_a_workflows() -> None:
    """So that PostgreSQL runs the member's ack and its fan-in in one transaction."""
    with TestKit(app) as kit:
        written = acks_written(kit)
        plain = fetch.enqueue("x")
        flow = chain(fetch.s("a"), report.s()).enqueue()
        kit.run_until_idle()
        members = {j.id for j in flow.get().members}
        sent = [(job_id, marked) for job_id, _, marked in written]
        assert sorted(sent) == sorted([(plain.id, False), *((m, True) for m in members)])
