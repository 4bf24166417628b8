"""Alerts: rules read from text, one evaluation's step, exactly one firing and one resolving
event with two evaluators racing on every tick (fake clock), the webhook, the rule file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.webhook import Webhook, webhook

from stagecrew import App
from stagecrew.backends.job_counts import CountKey
from stagecrew.backends.worker_registry import WorkerBeat, WorkerInfo
from stagecrew.clock import FakeClock
from stagecrew.errors import ConfigurationError
from stagecrew.maintenance.alert_evaluation import (
    TICK_RECORD,
    AlertEvaluator,
    measures,
    post_webhook,
)
from stagecrew.observability.alert_config import rules_from_file
from stagecrew.observability.alerts import (
    FIRING,
    OK,
    PENDING,
    AlertEvent,
    AlertState,
    advance,
    parse_rule,
)

INTERVAL = 15.0
HOOK = "http://hooks.example.com/stagecrew"


@pytest.mark.parametrize(
    ("text", "measure", "comparison", "threshold", "hold_for"),
    [
        ("depth > 1000 for 5m", "depth", ">", 1000.0, 300.0),
        ("oldest_wait > 10m", "oldest_wait", ">", 600.0, 0.0),
        ("error_rate > 5% for 10m", "error_rate", ">", 0.05, 600.0),
        ("error_rate >= 0.2", "error_rate", ">=", 0.2, 0.0),
        ("throughput < 1/s while depth > 0", "throughput", "<", 1.0, 0.0),
        ("throughput < 60/m", "throughput", "<", 1.0, 0.0),
        ("no live workers", "live_workers", "==", 0.0, 0.0),
        ("  No   Live  Workers ", "live_workers", "==", 0.0, 0.0),
    ],
)
def test_rules_read_as_written(
    text: str, measure: str, comparison: str, threshold: float, hold_for: float
) -> None:
    rule = parse_rule("a", text)
    assert (rule.condition.measure, rule.condition.comparison) == (measure, comparison)
    assert rule.condition.threshold == pytest.approx(threshold)
    assert rule.hold_for == hold_for


def test_a_while_clause_guards_the_condition() -> None:
    rule = parse_rule("stalled", "throughput < 1/s while depth > 0")
    assert rule.guard is not None and rule.guard.measure == "depth"
    base = {"depth": 0.0, "oldest_wait": 0.0, "error_rate": 0.0, "live_workers": 1.0}
    assert not rule.holds({**base, "throughput": 0.0})
    assert rule.holds({**base, "throughput": 0.0, "depth": 5.0})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("depht > 3", "unknown measure 'depht'"),
        ("depth >> 3", "is not a condition"),
        ("depth > lots", "not a threshold for depth"),
        ("error_rate > 5 percent", "is not a condition"),
        ("throughput < 1/week", "a rate such as 1/s"),
        ("oldest_wait > soon", "a duration such as 10m"),
        ("depth > 3 for ever", "is not a duration"),
        ("depth > nan", "not a threshold"),
    ],
)
def test_a_rule_with_a_mistake_is_refused_with_what_to_write(text: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        parse_rule("bad", text)


def values(**given: float) -> dict[str, float]:
    return {
        "depth": 0.0,
        "oldest_wait": 0.0,
        "error_rate": 0.0,
        "throughput": 0.0,
        "live_workers": 1.0,
        **given,
    }


def test_an_alert_is_pending_for_its_duration_then_fires_once_then_resolves_once() -> None:
    rule = parse_rule("backlog", "depth > 10 for 30s")
    state = AlertState()
    state, event = advance(rule, state, values(depth=11), 100.0)
    assert (state.state, state.since, event) == (PENDING, 100.0, None)
    state, event = advance(rule, state, values(depth=50), 120.0)
    assert (state.state, event) == (PENDING, None)
    state, event = advance(rule, state, values(depth=50), 130.0)
    assert state.state == FIRING and event is not None and event.status == "firing"
    state, event = advance(rule, state, values(depth=60), 145.0)
    assert (state.state, event) == (FIRING, None)
    state, event = advance(rule, state, values(depth=2), 160.0)
    assert state.state == OK and event is not None and event.status == "resolved"
    assert (state.fired_at, state.resolved_at) == (130.0, 160.0)
    state, event = advance(rule, state, values(depth=2), 175.0)
    assert (state.state, event) == (OK, None)


def test_a_condition_that_stops_holding_before_its_duration_never_fires() -> None:
    rule = parse_rule("backlog", "depth > 10 for 30s")
    state, _ = advance(rule, AlertState(), values(depth=11), 100.0)
    state, event = advance(rule, state, values(depth=3), 115.0)
    assert (state.state, event) == (OK, None)
    state, _ = advance(rule, state, values(depth=11), 130.0)
    assert state.since == 130.0  # the duration starts again


def test_a_stored_state_survives_its_text_and_a_corrupt_one_reads_as_ok() -> None:
    rule = parse_rule("backlog", "depth > 10")
    state, _ = advance(rule, AlertState(), values(depth=11), 100.0)
    assert AlertState.from_text(state.to_text()) == state
    assert AlertState.from_text("{not json") == AlertState()
    assert AlertState.from_text('{"state": "exploded"}').state == OK


def test_measures_come_from_the_stores_numbers() -> None:
    clock = FakeClock()
    app = App("memory://", clock=clock)

    @app.task(queue="email")
    def send() -> None: ...

    for _ in range(4):
        send.enqueue()
    clock.advance(90)
    app.backend.add_counts(
        {
            CountKey("email", "send", "succeeded"): 90,
            CountKey("email", "send", "dead"): 6,
            CountKey("email", "send", "retried"): 4,
            CountKey("other", "x", "dead"): 50,
            CountKey("email", "send", "snoozed"): 7,
        }
    )
    info = WorkerInfo("h", 1, ("email",), 2, 0, "0")
    app.backend.record_worker(WorkerBeat("w", info, 60.0))
    rule = parse_rule("email", "error_rate > 5%", queue="email", window=300.0)
    stats, registry = app.backend.stats(), app.backend.list_workers()
    history = app.backend.read_counts(400.0)
    got = measures(rule, stats, registry, history, history.now)
    assert got["depth"] == 4.0
    assert got["oldest_wait"] == pytest.approx(90.0)
    assert got["error_rate"] == pytest.approx(10 / 100)
    covered = history.now - ((history.now // 60) * 60 - 300.0)
    assert got["throughput"] == pytest.approx(100 / covered)
    assert got["live_workers"] == 1.0
    idle = parse_rule("idle", "no live workers", queue="reports")
    assert measures(idle, stats, registry, history, history.now)["live_workers"] == 0.0


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_two_evaluators_racing_on_every_tick_fire_and_resolve_exactly_once(
    engine: str, tmp_path: Path
) -> None:
    clock = FakeClock(start=1_000_000.0)
    url = "memory://" if engine == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    apps = [App(url, clock=clock)]
    if engine == "sqlite":  # a second process's store: its own connection and thread
        apps.append(App(url, clock=clock))
    for app in apps:
        app.task(name="work")(lambda: None)
        app.alert("backlog", "depth > 2 for 30s", webhook=HOOK)
    delivered: list[dict[str, object]] = []

    async def sink(url: str, payload: dict[str, object]) -> bool:
        assert url == HOOK
        delivered.append(payload)
        return True

    evaluators = [
        AlertEvaluator(
            lambda app=app: app.backend, app.alert_rules(), interval=INTERVAL, deliver=sink
        )
        for app in (apps * 2)[:2]
    ]

    async def tick(times: int) -> None:
        for n in range(times):
            order = evaluators if n % 2 else evaluators[::-1]
            await asyncio.gather(*(e.evaluate_once() for e in order))
            await asyncio.gather(*(e.evaluate_once() for e in order))  # the same tick again
            clock.advance(INTERVAL)

    async def scenario() -> None:
        for _ in range(5):
            apps[0].enqueue("work")
        await tick(6)  # pending at 0 s, firing at 30 s, still firing after
        assert [e["status"] for e in delivered] == ["firing"]
        claimed = apps[0].backend.claim(["default"], "w", 10, 30.0)
        assert len(claimed) == 5
        await tick(4)
        assert [e["status"] for e in delivered] == ["firing", "resolved"]

    asyncio.run(scenario())
    assert sum(e.evaluations for e in evaluators) == 10  # one per tick, fleet-wide
    [record] = apps[0].backend.list_limits("alert:")
    assert AlertState.from_text(record.value).state == OK
    assert apps[0].backend.read_limits([TICK_RECORD]).states[TICK_RECORD]
    for app in apps:
        app.close()


@pytest.fixture
def hook() -> Iterator[Webhook]:
    with webhook() as served:
        yield served


def test_the_webhook_gets_the_event_as_json(hook: Webhook) -> None:
    event = AlertEvent("backlog", "firing", "depth > 2", "email", 7.0, 123.0, hook.url)
    hook.refuse_first = 1
    assert not post_webhook(hook.url, event.payload())  # a 503: not taken
    assert post_webhook(hook.url, event.payload())
    assert hook.received == [
        {
            "id": "backlog:firing:123.0",
            "alert": "backlog",
            "status": "firing",
            "rule": "depth > 2",
            "queue": "email",
            "value": 7.0,
            "at": 123.0,
        }
    ]


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/hook", "http://host:80a/", "http://[::1"])
def test_a_webhook_that_cannot_take_the_event_says_so_without_raising(url: str) -> None:
    assert not post_webhook(url, {"id": "x"})


def test_an_event_the_webhook_refused_is_sent_again_later_in_order_once_taken() -> None:
    clock = FakeClock(start=2_000_000.0)
    app = App("memory://", clock=clock)
    app.task(name="work")(lambda: None)
    app.alert("backlog", "depth > 2", webhook=HOOK)
    taken: list[str] = []
    refusals = [2]

    async def flaky(url: str, payload: dict[str, object]) -> bool:
        if refusals[0]:
            refusals[0] -= 1
            return False
        taken.append(str(payload["id"]))
        return True

    evaluator = AlertEvaluator(lambda: app.backend, app.alert_rules(), deliver=flaky)

    async def scenario() -> None:
        for _ in range(3):
            app.enqueue("work")
        await evaluator.evaluate_once()  # fires; the webhook refuses
        app.backend.claim(["default"], "w", 10, 30.0)
        clock.advance(INTERVAL)
        await evaluator.evaluate_once()  # resolves; the webhook refuses the firing again
        assert taken == []
        clock.advance(INTERVAL)
        await evaluator.evaluate_once()  # both go, in order
        clock.advance(INTERVAL)
        await evaluator.evaluate_once()

    asyncio.run(scenario())
    assert [t.split(":")[1] for t in taken] == ["firing", "resolved"]
    [record] = app.backend.list_limits("alert:")
    assert AlertState.from_text(record.value).outbox == ()


def test_a_longer_interval_after_a_shorter_one_still_evaluates() -> None:
    clock = FakeClock(start=3_000_000.0 + 45.0)
    app = App("memory://", clock=clock)
    app.alert("idle", "depth > 0")
    short = AlertEvaluator(lambda: app.backend, app.alert_rules(), interval=15.0)
    long = AlertEvaluator(lambda: app.backend, app.alert_rules(), interval=60.0)

    async def scenario() -> None:
        await short.evaluate_once()
        for _ in range(4):
            clock.advance(15.0)
            await long.evaluate_once()

    asyncio.run(scenario())
    assert short.evaluations == 1 and long.evaluations >= 1


def test_an_alert_name_or_webhook_the_store_cannot_take_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="control characters"):
        parse_rule("tab\there", "depth > 1")
    with pytest.raises(ConfigurationError, match="with a host"):
        parse_rule("a", "depth > 1", webhook="http://host:80a/")


def test_rules_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(
        'webhook = "https://hooks.example.com/x"\n'
        "[alert.backlog]\n"
        'rule = "depth > 1000 for 5m"\n'
        'queue = "email"\n'
        "[alert.failing]\n"
        'rule = "error_rate > 5% for 10m"\n'
        'window = "10m"\n'
        'webhook = "https://other.example.com/y"\n'
    )
    backlog, failing = rules_from_file(path)
    assert (backlog.name, backlog.queue, backlog.hold_for) == ("backlog", "email", 300.0)
    assert backlog.webhook == "https://hooks.example.com/x"
    assert (failing.window, failing.webhook) == (600.0, "https://other.example.com/y")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[alert.x]\nrule = 'depht > 1'\n", "unknown measure"),
        ("[alert.x]\nqueue = 'a'\n", "needs a rule"),
        ("[alert.x]\nrule = 'depth > 1'\ncolour = 'red'\n", "unknown keys"),
        ("[alert.x\n", "not valid TOML"),
        ("[alerts.x]\nrule = 'depth > 1'\n", "unknown settings"),
        ("[alert.x]\nrule = 'depth > 1'\nwindow = 'soon'\n", "not a duration"),
    ],
)
def test_a_rule_file_with_a_mistake_is_refused(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=says):
        rules_from_file(path)


def test_a_firing_alert_not_evaluated_lately_is_stale_and_health_ignores_it(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from stagecrew.backends.limit_states import LimitSwap
    from stagecrew.backends.worker_registry import WorkerBeat, WorkerInfo
    from stagecrew.cli.main import main

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    app = App(url)
    now = app.backend.read_limits([]).now
    info = WorkerInfo("h", 1, ("default",), 1, 0, "0")
    app.backend.record_worker(WorkerBeat("w", info, 600.0))

    def record(name: str, evaluated_at: float) -> LimitSwap:
        state = AlertState(state=FIRING, rule="depth > 1", evaluated_at=evaluated_at, interval=15.0)
        return LimitSwap(f"alert:{name}", None, state.to_text(), 600.0)

    app.backend.swap_limits([record("live", now), record("removed", now - 3600)])
    assert not AlertState.from_text(
        app.backend.read_limits(["alert:live"]).states["alert:live"].value
    ).stale(now)
    app.close()
    result = CliRunner().invoke(main, ["health", "--url", url, "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["problems"] == ["alert live is firing: depth > 1"]
