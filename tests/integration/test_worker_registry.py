"""The worker registry with real worker processes, on every engine several processes share:
`stagecrew workers` lists each process with its identity while it runs, stopped after a clean
stop, lost after a SIGKILL; `stagecrew health` answers by its exit code; each process's title
shows its name, queues and busy slots."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import stagecrew
from stagecrew import App
from stagecrew.cli.main import main
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, workers_of, write_app

pytestmark = pytest.mark.slow

LEASE = 1.5
"""A short lease: beats every 0.5 s, so a killed worker reads as lost 1.5 s after its last."""

APP = """
import time
from stagecrew import App

app = App()

@app.task(queue="email")
def send(n: int) -> None:
    time.sleep(n)
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def listed(url: str, *more: str) -> list[dict[str, Any]]:
    result = run("workers", "--url", url, "--json", *more)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def statuses(url: str) -> dict[str, str]:
    return {row["id"]: row["status"] for row in listed(url)}


@pytest.fixture(autouse=True)
def no_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECREW_APP", raising=False)
    monkeypatch.delenv("STAGECREW_URL", raising=False)


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_workers_are_listed_alive_then_lost_or_stopped_and_health_follows(
    tmp_path: Path, engine: Engine
) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        App(url).backend.migrate()
        unhealthy = run("health", "--url", url)
        assert unhealthy.exit_code == 1
        assert "no live worker" in unhealthy.output

        ref = write_app(tmp_path, "registry_app", APP)
        args = ("--queues", "email,default", "--concurrency", "3", "--processes", "2")
        worker = start_worker(
            tmp_path, ref, {"STAGECREW_URL": url}, *args, "--lease-seconds", str(LEASE)
        )
        try:
            assert wait_for(lambda: len(listed(url)) == 2, timeout=30), listed(url)
            rows = listed(url)
            assert {r["status"] for r in rows} == {"alive"}
            children = sorted(workers_of(worker.pid))
            assert sorted(r["pid"] for r in rows) == children
            for row in rows:
                assert (row["queues"], row["concurrency"]) == (["email", "default"], 3)
                assert row["host"] == os.uname().nodename
                assert row["version"] == stagecrew.__version__
            titles = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children}
            assert {t.rstrip(b"\0") for t in titles.values()} == {
                b"stagecrew worker-0 [email,default] busy 0/3",
                b"stagecrew worker-1 [email,default] busy 0/3",
            }

            healthy = run("health", "--url", url, "--queue", "email")
            assert healthy.exit_code == 0, healthy.output
            assert "2 worker(s) alive" in healthy.output
            typo = run("health", "--url", url, "--queue", "emial", "--json")
            assert typo.exit_code == 1
            assert json.loads(typo.stdout)["problems"] == ["no live worker serves queue 'emial'"]

            killed = next(r for r in rows if r["pid"] == children[0])
            os.kill(children[0], signal.SIGKILL)  # the supervisor starts another in its place
            assert wait_for(lambda: statuses(url).get(killed["id"]) == "lost", timeout=30)
            assert wait_for(lambda: list(statuses(url).values()).count("alive") == 2, timeout=30)
        finally:
            code, output = stop(worker)
        assert code == 0, output
        after = statuses(url)
        assert list(after.values()).count("stopped") == 2, after
        assert after[killed["id"]] == "lost"
        assert run("health", "--url", url).exit_code == 1
        assert len(listed(url, "--since", "0s")) == 0
