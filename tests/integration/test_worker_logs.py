"""`stagecrew worker --log-format json`: every line every process writes is one JSON object,
and the lines a task's own logger writes carry its job."""

from __future__ import annotations

import json
from pathlib import Path

from stagecrew import App, JobState
from tests.support.processes import start_worker, stop, wait_for, write_app

APP = """
import logging
from stagecrew import App

app = App()
log = logging.getLogger("myapp.mail")

@app.task(queue="mail")
def send(to: str) -> None:
    log.info("sending to %s", to)
"""


def test_json_logs_carry_the_job_of_a_tasks_own_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    ref = write_app(tmp_path, "json_log_app", APP)
    producer = App(url)

    @producer.task(name="send", queue="mail")
    def send(to: str) -> None: ...

    logs = tmp_path / "worker.log"
    worker = start_worker(
        tmp_path, ref, {"STAGECREW_URL": url}, "--log-format", "json", log_file=logs
    )
    try:
        job = send.enqueue("ada@example.com")
        assert wait_for(lambda: job.get().state is JobState.SUCCEEDED, 60)
    finally:
        code, _ = stop(worker)
        producer.close()
    assert code == 0
    lines = [json.loads(line) for line in logs.read_text().splitlines() if line.strip()]
    assert {line["process"] for line in lines} >= {"MainProcess", "worker-0"}
    [mine] = [line for line in lines if line["logger"] == "myapp.mail"]
    assert mine["message"] == "sending to ada@example.com"
    assert (mine["job_id"], mine["task"], mine["queue"], mine["attempt"]) == (
        job.id,
        "send",
        "mail",
        1,
    )
