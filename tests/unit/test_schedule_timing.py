"""When ticks fall: cron in a zone with daylight saving, nicknames, seconds, intervals; and
what a declaration refuses."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from stagecrew import App, FakeClock, ScheduleError
from stagecrew.schedule import CronTiming, EveryTiming

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def local(ts: float, zone: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat()


def ticks(expression: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[str]:
    timing = CronTiming.parse(expression, zone)
    return [local(t, zone) for t in timing.due(start.timestamp(), end.timestamp(), 1000)]


def test_a_skipped_local_time_fires_once_at_the_transition() -> None:
    # Paris springs forward on 2025-03-30: 02:00 -> 03:00, so 02:30 does not exist.
    got = ticks(
        "30 2 * * *",
        PARIS,
        datetime(2025, 3, 29, 12, tzinfo=PARIS),
        datetime(2025, 3, 31, 12, tzinfo=PARIS),
    )
    assert got == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]


def test_a_repeated_local_time_fires_once() -> None:
    # Paris falls back on 2025-10-26: 03:00 -> 02:00, so 02:30 happens twice.
    got = ticks(
        "30 2 * * *",
        PARIS,
        datetime(2025, 10, 25, 12, tzinfo=PARIS),
        datetime(2025, 10, 27, 12, tzinfo=PARIS),
    )
    assert got == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]


def test_a_repeated_local_time_fires_once_even_from_inside_the_repeated_hour() -> None:
    """A last tick in the second 02:xx (after the fall back) must not find 02:30 again."""
    timing = CronTiming.parse("30 2 * * *", PARIS)
    second_0215 = datetime(2025, 10, 26, 2, 15, fold=1, tzinfo=PARIS).timestamp()
    first_0230 = datetime(2025, 10, 26, 2, 30, tzinfo=PARIS).timestamp()
    assert second_0215 > first_0230
    assert local(timing.next_after(second_0215) or 0) == "2025-10-27T02:30:00+01:00"


def test_a_six_field_expression_at_a_fixed_time_follows_the_same_rules() -> None:
    spring = ticks(
        "15 30 2 * * *",
        PARIS,
        datetime(2025, 3, 29, 12, tzinfo=PARIS),
        datetime(2025, 3, 31, 12, tzinfo=PARIS),
    )
    assert spring == ["2025-03-30T03:00:15+02:00", "2025-03-31T02:30:15+02:00"]
    autumn = ticks(
        "15 30 2 * * *",
        PARIS,
        datetime(2025, 10, 25, 12, tzinfo=PARIS),
        datetime(2025, 10, 27, 12, tzinfo=PARIS),
    )
    assert autumn == ["2025-10-26T02:30:15+02:00", "2025-10-27T02:30:15+01:00"]


def test_new_york_daylight_saving_both_ways() -> None:
    spring = ticks(
        "15 2 * * *",
        NEW_YORK,
        datetime(2025, 3, 8, 12, tzinfo=NEW_YORK),
        datetime(2025, 3, 9, 12, tzinfo=NEW_YORK),
    )
    assert spring == ["2025-03-09T03:00:00-04:00"]
    autumn = ticks(
        "15 1 * * *",
        NEW_YORK,
        datetime(2025, 11, 1, 12, tzinfo=NEW_YORK),
        datetime(2025, 11, 2, 12, tzinfo=NEW_YORK),
    )
    assert autumn == ["2025-11-02T01:15:00-04:00"]


def test_an_hourly_wildcard_runs_each_real_hour_through_the_fall_back() -> None:
    got = ticks(
        "0 * * * *",
        PARIS,
        datetime(2025, 10, 26, 1, 30, tzinfo=PARIS),
        datetime(2025, 10, 26, 3, 30, tzinfo=PARIS),
    )
    assert got == [
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]


def test_a_leap_day_schedule_fires_on_leap_years_only() -> None:
    got = ticks(
        "0 12 29 2 *",
        ZoneInfo("UTC"),
        datetime(2023, 1, 1, tzinfo=UTC),
        datetime(2033, 1, 1, tzinfo=UTC),
    )
    assert got == [
        "2024-02-29T12:00:00+00:00",
        "2028-02-29T12:00:00+00:00",
        "2032-02-29T12:00:00+00:00",
    ]


def test_every_seventh_minute_restarts_at_each_hour() -> None:
    got = ticks(
        "*/7 * * * *",
        ZoneInfo("UTC"),
        datetime(2025, 1, 1, 9, 50, tzinfo=UTC),
        datetime(2025, 1, 1, 10, 15, tzinfo=UTC),
    )
    assert got == [
        "2025-01-01T09:56:00+00:00",
        "2025-01-01T10:00:00+00:00",
        "2025-01-01T10:07:00+00:00",
        "2025-01-01T10:14:00+00:00",
    ]


def test_a_sixth_field_is_seconds_first() -> None:
    got = ticks(
        "*/20 * * * * *",
        ZoneInfo("UTC"),
        datetime(2025, 1, 1, 10, 0, 0, tzinfo=UTC),
        datetime(2025, 1, 1, 10, 1, 0, tzinfo=UTC),
    )
    assert got == [
        "2025-01-01T10:00:20+00:00",
        "2025-01-01T10:00:40+00:00",
        "2025-01-01T10:01:00+00:00",
    ]


@pytest.mark.parametrize(
    ("nickname", "expected"),
    [
        ("@hourly", "2025-01-01T11:00:00+00:00"),
        ("@daily", "2025-01-02T00:00:00+00:00"),
        ("@midnight", "2025-01-02T00:00:00+00:00"),
        ("@weekly", "2025-01-05T00:00:00+00:00"),
        ("@monthly", "2025-02-01T00:00:00+00:00"),
        ("@yearly", "2026-01-01T00:00:00+00:00"),
        ("@ANNUALLY", "2026-01-01T00:00:00+00:00"),
    ],
)
def test_nicknames(nickname: str, expected: str) -> None:
    timing = CronTiming.parse(nickname, "UTC")
    start = datetime(2025, 1, 1, 10, 30, tzinfo=UTC).timestamp()
    assert local(timing.next_after(start) or 0, ZoneInfo("UTC")) == expected


def test_due_returns_only_the_latest_ticks_of_a_long_gap_quickly() -> None:
    timing = CronTiming.parse("* * * * * *", "UTC")  # every second
    start = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    latest = timing.due(start, start + 30 * 86400, 3)
    assert latest == [start + 30 * 86400 - 2, start + 30 * 86400 - 1, start + 30 * 86400]


def test_every_is_anchored_to_the_epoch_so_restarts_do_not_drift() -> None:
    timing = EveryTiming.parse(timedelta(minutes=15))
    # Two schedulers started at different odd times agree on the grid.
    assert (
        timing.next_after(1_700_000_123.4)
        == timing.next_after(1_700_000_700.0)
        == 1_700_000_100.0 + 900
    )
    assert timing.due(1_700_000_100.0, 1_700_003_000.0, 10) == [
        1_700_001_000.0,
        1_700_001_900.0,
        1_700_002_800.0,
    ]
    assert (
        timing.next_after(1_700_001_000.0) == 1_700_001_900.0
    )  # a tick is never its own successor


@pytest.fixture
def app() -> App:
    app = App("memory://", clock=FakeClock())

    @app.task
    def report(region: str = "eu") -> None: ...

    return app


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "* * *"}, "3 fields"),
        ({"cron": "@reboot"}, "unknown cron nickname"),
        ({"cron": "0 0 31 2 *"}, "bad cron expression"),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 0}, "every="),
        ({"every": -5}, "every="),
        ({"every": math.nan}, "every="),
        ({"every": math.inf}, "every="),
        ({"every": timedelta(milliseconds=10)}, "every="),
        ({"every": 60, "tz": "Europe/Paris"}, "tz= is for cron"),
        ({}, "exactly one"),
        ({"cron": "0 3 * * *", "every": 60}, "exactly one"),
        ({"cron": "0 3 * * *", "args": (object(),)}, "JSON"),
        ({"cron": "0 3 * * *", "kwargs": {"region": math.nan}}, "NaN"),
        ({"cron": "0 3 * * *", "kwargs": {"nope": 1}}, "arguments do not fit"),
        ({"cron": "0 3 * * *", "catch_up": "some"}, "catch_up must be one of"),
        ({"cron": "0 3 * * *", "catch_up": "all", "max_catch_up": 0}, "max_catch_up"),
        ({"cron": "0 3 * * *", "name": ""}, "schedule name"),
    ],
)
def test_a_bad_declaration_fails_at_once_with_a_clear_error(
    app: App, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        app.schedule("report", **options)  # type: ignore[arg-type]
    assert app.schedules == {}


def test_a_duplicate_schedule_name_is_refused(app: App) -> None:
    app.schedule("report", cron="0 3 * * *", name="nightly")
    with pytest.raises(ScheduleError, match="declared already"):
        app.schedule("report", every=60, name="nightly")
    assert list(app.schedules) == ["nightly"]


def test_periodic_stacks_on_task_and_returns_it() -> None:
    app = App("memory://", clock=FakeClock())

    @app.periodic(cron="0 3 * * *", tz="Europe/Paris")
    @app.task
    def nightly_report() -> None: ...

    assert app.tasks["nightly_report"] is nightly_report
    schedule = app.schedules["nightly_report"]
    assert (schedule.timing.describe(), schedule.timing.zone) == ("0 3 * * *", "Europe/Paris")


def test_periodic_below_task_says_where_it_goes() -> None:
    app = App("memory://", clock=FakeClock())
    with pytest.raises(ScheduleError, match=r"above @app\.task"):
        app.periodic(every=60)(lambda: None)  # type: ignore[arg-type]
