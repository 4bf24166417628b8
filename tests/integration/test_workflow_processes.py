"""Chords on real worker processes: the callback runs exactly once, whoever finishes last and
whatever is killed on the way; a failing member and the continue mode, on every engine."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stagecrew import App, WorkflowStatus, chord, group
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import kill, start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow

APP = """
import os, time
from stagecrew import App, Context

app = App()

def record(name: str, line: str) -> None:
    with open(os.environ[name], "a") as ledger:
        ledger.write(line + "\\n")

@app.task(max_attempts=20)
def member(i: int, ctx: Context) -> int:
    time.sleep(0.05)
    record("MEMBERS_PATH", f"{ctx.job_id} {os.getpid()}")
    return i

@app.task(max_attempts=1)
def failing(i: int) -> int:
    raise ValueError(f"member {i} fails")

@app.task(max_attempts=20)
def callback(results: list, ctx: Context) -> int:
    record("CALLBACK_PATH", f"{ctx.job_id} {orjson_dumps(results)}")
    return len(results)

def orjson_dumps(value: object) -> str:
    import orjson
    return orjson.dumps(value).decode()
"""

MEMBERS = 50


def _producer(url: str) -> App:
    """The workflow's tasks, as the producer names them (the workers run the module's)."""
    app = App(url)

    @app.task(name="member", max_attempts=20)
    def member(i: int) -> int: ...

    @app.task(name="failing", max_attempts=1)
    def failing(i: int) -> int: ...

    @app.task(name="callback", max_attempts=20)
    def callback(results: list[object]) -> int: ...

    return app


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _ran_by(members: Path) -> set[str]:
    """The worker processes that have finished a member so far."""
    return {line.split()[1] for line in _lines(members)}


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_chord_fires_its_callback_exactly_once_though_a_worker_is_killed_mid_way(
    tmp_path: Path, engine: Engine
) -> None:
    members, callbacks = tmp_path / "members.txt", tmp_path / "callback.txt"
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {
            "STAGECREW_URL": url,
            "MEMBERS_PATH": str(members),
            "CALLBACK_PATH": str(callbacks),
        }
        ref = write_app(tmp_path, "chord_app", APP)
        app = _producer(url)
        args = ("--concurrency", "4", "--lease-seconds", "2", "--poll-interval", "0.2")
        args += ("--log-level", "info")
        logs = [tmp_path / "doomed.log", tmp_path / "survivor.log"]
        doomed = start_worker(tmp_path, ref, env, *args, log_file=logs[0])
        survivor = start_worker(tmp_path, ref, env, *args, log_file=logs[1])
        try:
            # both workers wait for work before the chord exists, so both take members
            assert wait_for(lambda: all("started:" in _text(log) for log in logs), 60)
            header = group(*(app.tasks["member"].s(i) for i in range(MEMBERS)))
            handle = chord(header, app.tasks["callback"].s()).enqueue()
            assert wait_for(lambda: len(_ran_by(members)) == 2, 60)
            assert wait_for(lambda: len(_lines(members)) >= MEMBERS // 3, 60)
            kill(doomed)
            assert handle.result(timeout=90) == MEMBERS
            found = handle.get()
            assert found.status is WorkflowStatus.SUCCEEDED
            assert all(job.state.value == "succeeded" for job in found.members)
        finally:
            kill(doomed)
            stop(survivor)
            app.close()
    fired = _lines(callbacks)
    assert len(fired) == 1, fired
    assert orjson.loads(fired[0].split(" ", 1)[1]) == list(range(MEMBERS))
    assert len(_lines(members)) >= MEMBERS  # at least once each; a killed member ran again


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_failing_member_stops_its_chord_and_the_continue_mode_hands_on_every_outcome(
    tmp_path: Path, engine: Engine
) -> None:
    callbacks = tmp_path / "callback.txt"
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {
            "STAGECREW_URL": url,
            "MEMBERS_PATH": str(tmp_path / "members.txt"),
            "CALLBACK_PATH": str(callbacks),
        }
        ref = write_app(tmp_path, "chord_app", APP)
        app = _producer(url)
        member, failing, callback = (app.tasks[n] for n in ("member", "failing", "callback"))
        stopped = chord(group(member.s(0), failing.s(1), member.s(2)), callback.s()).enqueue()
        carried_on = chord(
            group(member.s(0), failing.s(1), member.s(2)), callback.s(), on_failure="continue"
        ).enqueue()
        worker = start_worker(tmp_path, ref, env, "--concurrency", "4", "--poll-interval", "0.2")
        try:
            assert carried_on.result(timeout=60) == 3
            assert wait_for(lambda: stopped.state() is WorkflowStatus.FAILED, 30)
            assert wait_for(lambda: all(j.state.is_final for j in stopped.get().members[:3]), 30)
            held = stopped.get().members[3]
            assert (held.task, held.state.value) == ("callback", "scheduled")
        finally:
            stop(worker)
            app.close()
    [fired] = _lines(callbacks)  # the continue-mode callback only
    outcomes = orjson.loads(fired.split(" ", 1)[1])
    assert [o["state"] for o in outcomes] == ["succeeded", "dead", "succeeded"]
    assert outcomes[0]["result"] == 0 and outcomes[2]["result"] == 2
    assert outcomes[1]["error"]["message"] == "member 1 fails"
