"""Real worker processes add their counts of finished attempts to the store's history, on
every engine several processes share: a known workload reads back exactly, each outcome once,
from both processes together."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew import App, JobState
from stagecrew.testing.engines import Engine, engine_params
from tests.support.processes import start_worker, stop, wait_for, write_app

pytestmark = pytest.mark.slow

APP = """
from stagecrew import App

app = App()

@app.task(queue="email")
def send(n: int) -> None: ...

@app.task(queue="email", max_attempts=1)
def bounce(n: int) -> None:
    raise ValueError("no such mailbox")
"""


def producer_of(url: str) -> App:
    app = App(url)

    @app.task(queue="email")
    def send(n: int) -> None: ...

    @app.task(queue="email", max_attempts=1)
    def bounce(n: int) -> None: ...

    return app


@pytest.mark.parametrize("engine", engine_params(cross_process=True, variants=False))
def test_two_processes_count_a_known_workload_exactly(tmp_path: Path, engine: Engine) -> None:
    with engine.stores(tmp_path) as stores:
        url = stores.url()
        producer = producer_of(url)
        try:
            for n in range(30):
                producer.enqueue("send", [n])
            for n in range(7):
                producer.enqueue("bounce", [n])
            ref = write_app(tmp_path, "counts_app", APP)
            worker = start_worker(tmp_path, ref, {"STAGECREW_URL": url}, "--processes", "2")
            try:

                def finished() -> bool:
                    counts = {q.queue: q for q in producer.backend.stats()}["email"]
                    return (
                        counts.count(JobState.SUCCEEDED) == 30 and counts.count(JobState.DEAD) == 7
                    )

                assert wait_for(finished, timeout=60)
            finally:
                code, output = stop(worker)
            assert code == 0, output
            history = producer.backend.read_counts()
            assert history.totals(0.0) == {"succeeded": 30, "dead": 7}
            assert {b.key.task for b in history.buckets} == {"send", "bounce"}
        finally:
            producer.close()
