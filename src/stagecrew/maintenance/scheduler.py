"""Fires the app's schedules: one pass reads every stored record, then fires what is due.

Every worker process runs one `Scheduler`, and there is no leader: each pass of each
scheduler sends the same request for a tick (`schedule.plan_fire`), and the store's
compare-and-set lets one of them through (`Backend.fire_schedule`). A scheduler that loses
changes nothing and reads the new state on its next pass. Time is the app's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..backends.schedules import ScheduleFire, ScheduleFired, ScheduleRecord
from ..schedule import Schedule, plan_fire

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("stagecrew.scheduler")

MAX_SLEEP_SECONDS = 30.0
"""Longest wait between passes: how soon a resume, or a store back up, is noticed at worst."""
MIN_SLEEP_SECONDS = 0.01
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits after a pass that failed (the store is down), growing, then staying at the last."""


@dataclass(slots=True)
class PassReport:
    """What one pass did."""

    fired: dict[str, list[int]] = field(default_factory=dict)
    """Per schedule, the ids of the jobs this pass enqueued."""
    refused: list[str] = field(default_factory=list)
    """Schedules whose request another scheduler's write (or a pause) refused."""
    orphaned: list[str] = field(default_factory=list)
    """Schedules the store has a record of and the app's code no longer declares."""
    next_fire: float | None = None
    """The earliest time a schedule of the app is due next."""


@dataclass(slots=True)
class PendingPass:
    """A pass planned from the records read at `now`, not sent yet."""

    now: float
    fires: list[tuple[Schedule, ScheduleRecord | None, ScheduleFire]] = field(default_factory=list)
    report: PassReport = field(default_factory=PassReport)


class Scheduler:
    """The schedules of `schedules` (by name) against one store; see the module docstring."""

    def __init__(self, app: App, schedules: dict[str, Schedule] | None = None) -> None:
        self.app = app
        self.schedules = app.schedules if schedules is None else schedules
        self._reported: set[str] = set()

    # -- one pass: read, plan, fire -----------------------------------------------------
    def fire_due(self) -> PassReport:
        """One pass with the synchronous store calls (tests, scripts)."""
        return self.send(self.plan())

    def plan(self) -> PendingPass:
        """The first half of a pass: read every record, plan each due schedule's request."""
        now = self.app.clock.now()
        return self._planned(self.app.backend.list_schedules(), now)

    def send(self, pending: PendingPass) -> PassReport:
        """The second half: send each planned request; the store refuses stale ones."""
        for schedule, record, fire in pending.fires:
            done = self.app.backend.fire_schedule(fire)
            self._note(pending.report, schedule, record, fire, done, pending.now)
        return pending.report

    async def fire_due_async(self) -> PassReport:
        """One pass without blocking the event loop (the worker's)."""
        backend = self.app.backend
        now = self.app.clock.now()
        pending = self._planned(await backend.list_schedules_async(), now)
        for schedule, record, fire in pending.fires:
            done = await backend.fire_schedule_async(fire)
            self._note(pending.report, schedule, record, fire, done, now)
        return pending.report

    def _planned(self, stored: Iterable[ScheduleRecord], now: float) -> PendingPass:
        records = {r.name: r for r in stored}
        pending = PendingPass(now)
        self._report_orphans(records, pending.report)
        for schedule in self.schedules.values():
            record = records.get(schedule.name)
            last = None if record is None else record.last_tick
            if record is not None and record.paused:
                continue
            fire = plan_fire(schedule, last, now)
            if fire is None:
                _earliest(pending.report, schedule.next_fire(last, now))
            else:
                pending.fires.append((schedule, record, fire))
        return pending

    def _note(
        self,
        report: PassReport,
        schedule: Schedule,
        record: ScheduleRecord | None,
        fire: ScheduleFire,
        done: ScheduleFired,
        now: float,
    ) -> None:
        if not done.applied:
            report.refused.append(schedule.name)
            _earliest(report, schedule.next_fire(done.last_tick, now))
            return
        if done.enqueued:
            report.fired[schedule.name] = [entry.id for entry in done.enqueued]
            log.info(
                "schedule %s fired %d job(s): %s",
                schedule.name,
                len(done.enqueued),
                ", ".join(str(entry.id) for entry in done.enqueued),
            )
        elif record is not None and record.last_tick is not None:
            log.info("schedule %s passed over missed ticks (catch_up=skip)", schedule.name)
        _earliest(report, schedule.next_fire(fire.advance_to, now))

    def _report_orphans(self, records: dict[str, ScheduleRecord], report: PassReport) -> None:
        for name in sorted(records.keys() - self.schedules.keys()):
            report.orphaned.append(name)
            if name not in self._reported:
                self._reported.add(name)
                log.warning(
                    "schedule %r is in the store but no longer in the app's code: it does "
                    "not fire (`stagecrew cron list` shows it as removed)",
                    name,
                )

    # -- the worker's loop -----------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until `stop` is set: each waits for the next due tick (at most
        `MAX_SLEEP_SECONDS`); a failed pass is logged and tried again with backoff."""
        failures = 0
        while not stop.is_set():
            try:
                report = await self.fire_due_async()
            except Exception as exc:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("schedules: pass failed: %s (trying again in %gs)", exc, delay)
            else:
                failures = 0
                delay = MAX_SLEEP_SECONDS
                if report.next_fire is not None:
                    delay = report.next_fire - self.app.clock.now()
                delay = min(max(delay, MIN_SLEEP_SECONDS), MAX_SLEEP_SECONDS)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def _earliest(report: PassReport, when: float | None) -> None:
    if when is not None and (report.next_fire is None or when < report.next_fire):
        report.next_fire = when
