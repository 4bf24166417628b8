"""Log records written while a job runs carry the job (id, task, queue, attempt), from the
task's own logger too, sync or async; the JSON format writes them as fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from stagecrew import App
from stagecrew.testing.kit import TestKit
from stagecrew.worker.logs import LOG_FORMAT, JobFilter, JsonFormatter

users_log = logging.getLogger("myapp.billing")


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(JobFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    users_log.addHandler(handler)
    users_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        users_log.removeHandler(handler)


def test_a_tasks_own_log_records_carry_the_job_sync_and_async(captured: Captured) -> None:
    app = App("memory://")

    @app.task(queue="billing", max_attempts=3)
    def invoice(n: int) -> None:
        users_log.info("invoicing %d", n)
        if n == 1:
            raise RuntimeError("try again")

    @app.task(queue="billing")
    async def remind(n: int) -> None:
        users_log.info("reminding %d", n)

    with TestKit(app) as kit:
        first = invoice.enqueue(1)
        other = remind.enqueue(2)
        kit.run_until_idle()
        kit.run_until_idle(advance_time=True)
    fields = {
        (r.getMessage(), r.job_id, r.job_task, r.job_queue, r.job_attempt)  # type: ignore[attr-defined]
        for r in captured.records
    }
    assert ("invoicing 1", str(first.id), "invoice", "billing", 1) in fields
    assert ("invoicing 1", str(first.id), "invoice", "billing", 2) in fields  # its retry
    assert ("reminding 2", str(other.id), "remind", "billing", 1) in fields


def test_outside_a_job_the_fields_say_so(captured: Captured) -> None:
    users_log.info("not in a job")
    [record] = captured.records
    assert (record.job_id, record.job_task, record.job_attempt) == ("-", "-", "-")  # type: ignore[attr-defined]


def test_the_json_format_writes_one_object_with_the_jobs_fields(captured: Captured) -> None:
    app = App("memory://")

    @app.task
    def fails() -> None:
        users_log.info("about to fail")
        try:
            raise ValueError("bad input")
        except ValueError:
            users_log.exception("it failed")

    with TestKit(app) as kit:
        handle = fails.enqueue()
        kit.run_until_idle()
    lines = [json.loads(JsonFormatter().format(r)) for r in captured.records]
    assert [line["message"] for line in lines] == ["about to fail", "it failed"]
    first = lines[0]
    assert (first["job_id"], first["task"], first["queue"], first["attempt"]) == (
        handle.id,
        "fails",
        "default",
        1,
    )
    assert first["level"] == "INFO" and first["logger"] == "myapp.billing"
    assert "ValueError: bad input" in lines[1]["exception"]
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None)
    JobFilter().filter(outside)
    assert "job_id" not in json.loads(JsonFormatter().format(outside))


def test_the_text_format_shows_the_job_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None)
    JobFilter().filter(record)
    assert " job=- x: plain" in logging.Formatter(LOG_FORMAT).format(record)


def test_a_stored_traceback_starts_at_the_tasks_frame_and_retries_say_when() -> None:
    app = App("memory://")

    def helper() -> None:
        raise KeyError("missing")

    @app.task(max_attempts=2)
    def sync_task() -> None:
        helper()

    @app.task(max_attempts=1, timeout=5)
    async def async_task() -> None:
        helper()

    records: list[logging.LogRecord] = []
    handler = Captured()
    handler.emit = records.append  # type: ignore[method-assign]
    worker_log = logging.getLogger("stagecrew.worker")
    worker_log.addHandler(handler)
    try:
        with TestKit(app) as kit:
            first = sync_task.enqueue()
            second = async_task.enqueue()
            kit.run_until_idle()
            stored = {name: h.get() for h, name in ((first, "sync"), (second, "async"))}
    finally:
        worker_log.removeHandler(handler)
    for name, job in stored.items():
        [error] = job.errors
        lines = error.traceback.splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert f"in {name}_task" in lines[1], error.traceback  # the task's frame comes first
        assert "stagecrew/worker" not in error.traceback
        assert "in helper" in error.traceback and "KeyError: 'missing'" in error.traceback
    retried = [r.getMessage() for r in records if "will retry" in r.getMessage()]
    assert len(retried) == 1 and " will retry in " in retried[0]
    retry_in = float(retried[0].rsplit("will retry in ", 1)[1].rstrip("s"))
    assert stored["sync"].run_at == pytest.approx(kit.clock.now() + retry_in, abs=0.06)


def test_each_attempt_logs_its_start_and_end_at_the_chosen_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App("memory://")

    @app.task(max_attempts=2)
    def flaky(n: int) -> None:
        if n == 1:
            raise RuntimeError("again")

    jobs_log = logging.getLogger("stagecrew.jobs")
    handler = Captured()
    jobs_log.addHandler(handler)
    jobs_log.setLevel(logging.DEBUG)
    try:
        with TestKit(app) as kit:  # DEBUG by default: not at INFO
            flaky.enqueue(0)
            kit.run_until_idle()
        assert {r.levelno for r in handler.records} == {logging.DEBUG}
        handler.records.clear()
        monkeypatch.setenv("STAGECREW_JOB_LOG_LEVEL", "info")
        with TestKit(app) as kit:
            job = flaky.enqueue(1)
            kit.run_until_idle()
    finally:
        jobs_log.removeHandler(handler)
        jobs_log.setLevel(logging.NOTSET)
    lines = [(r.levelno, r.getMessage()) for r in handler.records]
    assert lines[0] == (logging.INFO, f"job {job.id} flaky attempt 1 started")
    level, ended = lines[1]
    assert level == logging.INFO
    assert ended.startswith(f"job {job.id} flaky attempt 1 ended after ")
    assert ended.endswith(" ms: retry")
