"""`stagecrew metrics serve --url`: the store's queue gauges over HTTP with the URL alone (no
app), on every engine, and `stagecrew_store_up 0` from a store that cannot be reached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stagecrew import App, JobState
from stagecrew.backends.limit_states import LimitSwap
from stagecrew.backends.worker_registry import WorkerBeat, WorkerInfo
from stagecrew.limits.circuit import CircuitState
from stagecrew.limits.rate import Bucket
from stagecrew.observability.alerts import FIRING, AlertState
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import stop, wait_for
from tests.support.scrape import endpoint_in, scrape, value

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _serving(tmp_path: Path, url: str, *more: str) -> Iterator[str]:
    """`stagecrew metrics serve --url url --port 0`, without an app unless `more` names one;
    its metrics URL."""
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("STAGECREW_APP", "STAGECREW_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT / "src")])
    command = [sys.executable, "-m", "stagecrew", "metrics", "serve", "--url", url, *more]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*command, "--port", "0", "--host", "127.0.0.1"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_for(lambda: endpoint_in(log) is not None or process.poll() is not None, 30)
        endpoint = endpoint_in(log)
        assert endpoint is not None, log.read_text()
        yield endpoint
    finally:
        code, _ = stop(process)
        assert code == 0, log.read_text()


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_queue_depths_by_state_are_served_from_the_store_url_alone(
    tmp_path: Path, engine: Engine
) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        app = App(url)

        @app.task(queue="mail")
        def send(i: int) -> None: ...

        @app.task(queue="reports")
        def report(i: int) -> None: ...

        try:
            send.enqueue_many([(i,) for i in range(3)])
            report.options(delay=3600).enqueue_many([(i,) for i in range(2)])
            app.backend.pause_queue("reports")
            for n, busy in enumerate((3, 1)):
                info = WorkerInfo("h", 100 + n, ("mail",), 4, busy, "0")
                app.backend.record_worker(WorkerBeat(f"w{n}", info, 60.0))
            stopped = WorkerInfo("h", 99, ("mail",), 4, 0, "0")
            app.backend.record_worker(WorkerBeat("gone", stopped, 60.0, stopped=True))
            at = app.backend.read_limits([]).now
            firing = AlertState(
                state=FIRING, rule="depth > 2", queue="mail", evaluated_at=at, interval=60.0
            ).to_text()
            tripped = CircuitState(state="open", until=1e12).to_text()
            app.backend.swap_limits(
                [
                    LimitSwap("alert:mail-backlog", None, firing, 600.0),
                    LimitSwap("circuit:payments", None, tripped, 600.0),
                ]
            )
            with _serving(tmp_path, url) as endpoint:
                samples = scrape(endpoint)
        finally:
            app.close()
    assert value(samples, "stagecrew_store_up") == 1
    depth = {
        (labels["queue"], labels["state"]): v
        for (name, frozen), v in samples.items()
        if name == "stagecrew_queue_depth" and (labels := dict(frozen))
    }
    expected = {(q, str(s)): 0.0 for q in ("mail", "reports") for s in JobState}
    expected[("mail", "available")] = 3
    expected[("reports", "scheduled")] = 2
    assert depth == expected
    mail_age = value(samples, "stagecrew_queue_oldest_due_seconds", queue="mail")
    assert mail_age is not None and 0 <= mail_age < 60
    assert value(samples, "stagecrew_queue_oldest_due_seconds", queue="reports") == 0
    assert value(samples, "stagecrew_queue_paused", queue="reports") == 1
    assert value(samples, "stagecrew_queue_paused", queue="mail") == 0
    assert value(samples, "stagecrew_workers_alive") == 2
    assert value(samples, "stagecrew_fleet_slots") == 8
    assert value(samples, "stagecrew_fleet_busy_slots") == 4
    assert value(samples, "stagecrew_alert_firing", alert="mail-backlog") == 1
    circuit = {
        labels["state"]: v
        for (name, frozen), v in samples.items()
        if name == "stagecrew_circuit_state" and (labels := dict(frozen))
    }
    assert circuit == {"closed": 0, "open": 1, "half_open": 0}


@pytest.mark.parametrize(
    "scheme",
    ["postgresql://postgres@127.0.0.1:{port}/test", "redis://127.0.0.1:{port}/0"],
    ids=["postgres", "redis"],
)
def test_a_store_that_cannot_be_reached_is_reported_down_not_a_crash(
    tmp_path: Path, scheme: str
) -> None:
    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        url = scheme.format(port=refusing.getsockname()[1])
        with _serving(tmp_path, url) as endpoint:
            first, again = scrape(endpoint), scrape(endpoint)
    for samples in (first, again):
        assert value(samples, "stagecrew_store_up") == 0
        assert not any(name.startswith("stagecrew_queue_") for name, _ in samples)


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                *(sys.executable, "-m", "stagecrew", "metrics", "serve", "--url", "memory://"),
                *("--port", str(port), "--host", "127.0.0.1"),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: --port: cannot serve metrics on 127.0.0.1:{port}: the port is in use; "
        "choose another port"
    ]


CAPPED_APP = """
from stagecrew import App

app = App()

@app.task(concurrency=2)
def render(n: int) -> None: ...

@app.task(rate_limit="10/s")
def notify(n: int) -> None: ...
"""


def test_with_the_app_its_caps_and_rate_limits_are_served_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "capped_app.py").write_text(CAPPED_APP)
    app = App(url)
    app.task(name="render")(lambda n: None)
    app.task(name="notify")(lambda n: None)
    try:
        for n in range(5):
            app.enqueue("render", [n])
        app.enqueue("notify", [1])
        assert len(app.backend.claim(["default"], "w", 2, 60.0)) == 2  # the cap's two slots
        now = app.backend.read_limits([]).now
        booked = Bucket(tat=now + 30.0, booked=now + 30.0).to_text()  # a backlog held back
        app.backend.swap_limits([LimitSwap("rate:notify", None, booked, 600.0)])
        with _serving(tmp_path, url, "--app", "capped_app:app") as endpoint:
            samples = scrape(endpoint)
    finally:
        app.close()
    assert value(samples, "stagecrew_cap_limit", cap="render") == 2
    assert value(samples, "stagecrew_cap_running", cap="render") == 2
    assert value(samples, "stagecrew_cap_waiting", cap="render") == 3
    held = value(samples, "stagecrew_rate_limit_booked_seconds", bucket="rate:notify")
    assert held is not None and 25 < held <= 30
