"""Tracing across real processes, on every engine several processes share: a web request's
trace continues into the worker. The producer (a process of its own) enqueues inside a request
span; the worker process's `process` span has the producer's `send` span as its parent, in
the same trace, and the task's own span is a child of it; messaging attributes follow the
OpenTelemetry conventions; a failed attempt's span has an error status.

Each process sets up the OpenTelemetry SDK and writes its finished spans to a file, one JSON
object per line (a tracer provider is process-wide, so none is set in the test process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stagecrew import App, JobState
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

provider = TracerProvider()
spans = open(os.environ["SPANS_PATH"], "a", buffering=1)
provider.add_span_processor(SimpleSpanProcessor(
    ConsoleSpanExporter(out=spans, formatter=lambda s: s.to_json(indent=None) + "\\n")
))
trace.set_tracer_provider(provider)
"""

APP = (
    SETUP
    + """
from stagecrew import App

app = App()
tracer = trace.get_tracer("mailer")

@app.task(queue="email")
def welcome(user: str) -> None:
    with tracer.start_as_current_span("render welcome email"):
        pass

@app.task(queue="email", max_attempts=1)
def broken(user: str) -> None:
    raise ValueError("no template")
"""
)

PRODUCER = (
    SETUP
    + """
import sys
from stagecrew import App

app = App(sys.argv[1])
app.task(name="welcome", queue="email")(lambda user: None)
app.task(name="broken", queue="email", max_attempts=1)(lambda user: None)
from opentelemetry import baggage, context
context.attach(baggage.set_baggage("user.email", "ada@example.com"))  # never to be stored
with trace.get_tracer("web").start_as_current_span("POST /signup"):
    print(app.enqueue("welcome", ["ada"]).id)
    print(app.enqueue("broken", ["bob"]).id)
"""
)


def spans_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_a_requests_trace_continues_into_the_worker(tmp_path: Path, engine: Engine) -> None:
    produced, worked = tmp_path / "producer.jsonl", tmp_path / "worker.jsonl"
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SPANS_PATH": str(produced)}
        App(url).backend.migrate()
        done = subprocess.run(
            [sys.executable, "-c", PRODUCER, url],
            check=False,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        welcome_id, broken_id = (int(line) for line in done.stdout.split())
        ref = write_app(tmp_path, "traced_app", APP)
        worker = start_worker(tmp_path, ref, {"STAGECREW_URL": url, "SPANS_PATH": str(worked)})
        watcher = App(url)
        try:

            def finished() -> bool:
                states = {watcher.jobs.get(i).state for i in (welcome_id, broken_id)}
                return states == {JobState.SUCCEEDED, JobState.DEAD}

            assert wait_for(finished, timeout=60)
            assert wait_for(lambda: len(spans_in(worked)) >= 3, timeout=10)
        finally:
            code, output = stop(worker)
            watcher.close()
        assert code == 0, output

        payload = json.loads(App(url).jobs.get(welcome_id).payload)
    assert set(payload["trace"]) == {"traceparent"}  # no baggage in the store

    by_name = {s["name"]: s for s in spans_in(produced)}
    request, sends = (
        by_name["POST /signup"],
        [s for s in spans_in(produced) if s["kind"] == "SpanKind.PRODUCER"],
    )
    assert len(sends) == 2 and {s["name"] for s in sends} == {"send email"}
    worker_spans = spans_in(worked)
    processes = {
        s["attributes"]["messaging.message.id"]: s
        for s in worker_spans
        if s["kind"] == "SpanKind.CONSUMER"
    }
    for job_id, send in zip((welcome_id, broken_id), sends, strict=True):
        assert send["attributes"]["messaging.message.id"] == str(job_id)
        process = processes[str(job_id)]
        assert process["name"] == "process email"
        assert process["context"]["trace_id"] == request["context"]["trace_id"]
        assert process["parent_id"] == send["context"]["span_id"]
        attributes = process["attributes"]
        assert attributes["messaging.system"] == "stagecrew"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.destination.name"] == "email"
    [own] = [s for s in worker_spans if s["name"] == "render welcome email"]
    assert own["parent_id"] == processes[str(welcome_id)]["context"]["span_id"]
    assert processes[str(welcome_id)]["status"]["status_code"] == "UNSET"
    failed = processes[str(broken_id)]
    assert failed["status"]["status_code"] == "ERROR"
    assert "ValueError: no template" in failed["status"]["description"]


BROKEN_TRACING = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

class Broken(SpanProcessor):
    def on_start(self, span, parent_context=None):
        raise RuntimeError("the exporter is misconfigured")

provider = TracerProvider()
provider.add_span_processor(Broken())
trace.set_tracer_provider(provider)

from stagecrew import App
from stagecrew.testing import TestKit

app = App("memory://")
ran = []

@app.task
def work(n: int) -> None:
    ran.append(n)

with TestKit(app) as kit:
    work.enqueue(7)
    kit.run_until_idle()
    print(ran, [j.state.value for j in kit.jobs()])
"""


def test_a_failing_tracing_library_changes_nothing_a_job_does() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_TRACING], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[7] ['succeeded']"
    assert "tracing: could not start a send default span" in done.stderr
    assert "tracing: could not start a process default span" in done.stderr
