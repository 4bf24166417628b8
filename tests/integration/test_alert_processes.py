"""Alerts evaluated by real worker processes, on every engine several processes share: a
backlog on a queue no worker serves fires once, shows in `stagecrew alerts` and makes
`stagecrew health` fail, and resolves once when the backlog is gone; the webhook gets each
event exactly once although two processes evaluate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stagecrew import App
from stagecrew.cli.main import main
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, write_app
from tests.support.webhook import Webhook, webhook

pytestmark = pytest.mark.slow

APP = """
from stagecrew import App

app = App()
app.alert("email-backlog", "depth > 3", queue="email")

@app.task(queue="email")
def send(n: int) -> None: ...
"""


@pytest.fixture
def hook() -> Iterator[Webhook]:
    with webhook() as served:
        yield served


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def alert_state(url: str) -> str | None:
    result = run("alerts", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    return rows[0]["state"] if rows else None


@pytest.fixture(autouse=True)
def no_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECREW_APP", raising=False)
    monkeypatch.delenv("STAGECREW_URL", raising=False)


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_backlog_alert_fires_and_resolves_once_across_two_evaluating_processes(
    tmp_path: Path, engine: Engine, hook: Webhook
) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        producer = App(url)
        producer.task(name="send", queue="email")(lambda n: None)
        try:
            for n in range(5):
                producer.enqueue("send", [n])
            ref = write_app(tmp_path, "alert_app", APP)
            env = {"STAGECREW_URL": url, "STAGECREW_ALERT_WEBHOOK": hook.url}
            args = ("--queues", "default", "--processes", "2", "--alert-interval", "0.3")
            worker = start_worker(tmp_path, ref, env, *args)
            try:
                assert wait_for(lambda: alert_state(url) == "firing", timeout=30)
                health = run("health", "--url", url)
                assert health.exit_code == 1
                assert "alert email-backlog is firing: depth > 3 (queue email)" in health.output
                for job in producer.backend.claim(["email"], "elsewhere", 10, 60.0):
                    assert job.queue == "email"
                assert wait_for(lambda: alert_state(url) == "ok", timeout=30)
                assert wait_for(lambda: len(hook.received) >= 2, timeout=10)
                wait_for(lambda: len(hook.received) > 2, timeout=1.0)  # a duplicate would come
            finally:
                code, output = stop(worker)
            assert code == 0, output
        finally:
            producer.close()
    assert [(e["alert"], e["status"], e["queue"]) for e in hook.received] == [
        ("email-backlog", "firing", "email"),
        ("email-backlog", "resolved", "email"),
    ]
    assert hook.received[0]["value"] == 5.0
