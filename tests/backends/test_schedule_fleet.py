"""Several schedulers sharing one store of each engine over a simulated day, on the fake
clock: exactly one job per tick, and no tick fired by two passes."""

from __future__ import annotations

import pytest
from tests.unit.test_scheduler import START, simulate_day

from stagecrew import App, FakeClock
from stagecrew.testing.conformance import BackendFactory


@pytest.mark.parametrize("catch_up", ["all", "latest"])
def test_several_schedulers_over_a_day_make_one_job_per_tick_on_every_engine(
    backend_factory: BackendFactory, catch_up: str
) -> None:
    clock = FakeClock(START)
    app = App("memory://", clock=clock)

    @app.task
    def report() -> None: ...

    app.schedule(report, cron="*/7 * * * *", catch_up=catch_up, name="seventh")
    app.use_backend(backend_factory(clock))
    counts = simulate_day(app, clock, schedulers=3, seed=11)
    assert max(counts.values()) == 1
    if catch_up == "all":
        timing = app.schedules["seventh"].timing
        first, last = min(counts).timestamp(), max(counts).timestamp()
        assert sorted(t.timestamp() for t in counts) == [first, *timing.due(first, last, 10_000)]
