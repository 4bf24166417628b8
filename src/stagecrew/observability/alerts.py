"""Alert rules: what they say, how they are read from text, and how one evaluation moves them.

A rule is one line: `<measure> <comparison> <threshold> [for <duration>] [while <measure>
<comparison> <threshold>]`, or the phrase `no live workers`:

    depth > 1000 for 5m
    oldest_wait > 10m
    error_rate > 5% for 10m
    throughput < 1/s while depth > 0
    no live workers

Measures, each for one queue or (no `queue`) all of them together:
- `depth`: jobs due and waiting to be claimed;
- `oldest_wait`: how long the longest-waiting due job has waited (a duration);
- `error_rate`: the share of finished attempts that raised (retried or dead), over the
  rule's `window` (5 minutes by default) and the current minute (a percentage or fraction);
- `throughput`: finished attempts per second over that window (`1/s`, `60/m`, `1000/h`);
- `live_workers`: worker processes alive (serving the queue, with `queue`).

An alert is `ok`, `pending` (its condition holds, not yet for its `for` duration) or
`firing`. One evaluation (`advance`) moves it, and says whether it fired or resolved; the
evaluator (`alert_evaluation.py`) makes that one evaluation per interval fleet-wide.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..backends.limit_states import check_limit_name
from ..durations import parse_duration
from ..errors import ConfigurationError

MEASURES = ("depth", "oldest_wait", "error_rate", "throughput", "live_workers")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
DEFAULT_WINDOW = 300.0
OK, PENDING, FIRING = "ok", "pending", "firing"
STALE_INTERVALS = 4
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class Condition:
    measure: str
    comparison: str
    threshold: float

    def holds(self, values: Mapping[str, float]) -> bool:
        return COMPARISONS[self.comparison](values[self.measure], self.threshold)

    def text(self) -> str:
        return f"{self.measure} {self.comparison} {_threshold_text(self.measure, self.threshold)}"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert: its name, its rule, where it looks, and where its events go."""

    name: str
    rule: str
    """The rule as written."""
    condition: Condition
    hold_for: float = 0.0
    """Seconds the condition must hold before the alert fires (`for 5m`)."""
    guard: Condition | None = None
    """The rule's `while` condition: the alert can only be pending or firing while it holds."""
    queue: str | None = None
    window: float = DEFAULT_WINDOW
    webhook: str | None = None

    @property
    def record_name(self) -> str:
        return f"alert:{self.name}"

    def holds(self, values: Mapping[str, float]) -> bool:
        return self.condition.holds(values) and (self.guard is None or self.guard.holds(values))


@dataclass(frozen=True, slots=True)
class AlertState:
    """An alert's state as the store keeps it (JSON in its limit-state record)."""

    state: str = OK
    since: float | None = None
    """When it became pending (and stayed pending or firing since)."""
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    """The measure's value at the last evaluation."""
    evaluated_at: float | None = None
    rule: str = ""
    queue: str | None = None
    interval: float | None = None
    """The evaluation interval of the evaluator that wrote it: a record not evaluated for a
    few intervals is stale (its rule was removed, or no worker evaluates any more)."""
    outbox: tuple[dict[str, Any], ...] = ()
    """Events not yet accepted by the rule's webhook, oldest first: every later evaluation
    tries them again, in order, until the webhook takes them."""

    def stale(self, now: float) -> bool:
        """Not evaluated for `STALE_INTERVALS` intervals: its state may no longer hold."""
        if self.evaluated_at is None or self.interval is None:
            return True
        return now - self.evaluated_at > STALE_INTERVALS * self.interval

    def to_text(self) -> str:
        return orjson.dumps(
            {
                "state": self.state,
                "since": self.since,
                "fired_at": self.fired_at,
                "resolved_at": self.resolved_at,
                "value": self.value,
                "evaluated_at": self.evaluated_at,
                "rule": self.rule,
                "queue": self.queue,
                "interval": self.interval,
                "outbox": list(self.outbox),
            }
        ).decode()

    @classmethod
    def from_text(cls, text: str | None) -> AlertState:
        """The stored state; a record no evaluator wrote reads as ok."""
        if text is None:
            return cls()
        try:
            data = orjson.loads(text)
            state = data["state"] if data["state"] in (OK, PENDING, FIRING) else OK
            return cls(
                state=state,
                since=_opt_float(data.get("since")),
                fired_at=_opt_float(data.get("fired_at")),
                resolved_at=_opt_float(data.get("resolved_at")),
                value=_opt_float(data.get("value")),
                evaluated_at=_opt_float(data.get("evaluated_at")),
                rule=str(data.get("rule", "")),
                queue=None if data.get("queue") is None else str(data["queue"]),
                interval=_opt_float(data.get("interval")),
                outbox=tuple(e for e in data.get("outbox") or () if isinstance(e, dict)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return cls()


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert that fired or resolved at one evaluation."""

    name: str
    status: str
    """`firing` or `resolved`."""
    rule: str
    queue: str | None
    value: float
    at: float
    webhook: str | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        """Names this transition: a webhook may get an event again (it is delivered at least
        once), and can drop a repeat by its id."""
        return f"{self.name}:{self.status}:{self.at!r}"

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert": self.name,
            "status": self.status,
            "rule": self.rule,
            "queue": self.queue,
            "value": self.value,
            "at": self.at,
        }

    def describe(self) -> str:
        where = f" (queue {self.queue})" if self.queue else ""
        return f"alert {self.name} {self.status}: {self.rule}{where}; value {self.value:g}"


def advance(
    rule: AlertRule, state: AlertState, values: Mapping[str, float], now: float
) -> tuple[AlertState, AlertEvent | None]:
    """One evaluation of `rule` at `now`: the state after it, and the event it makes, if any."""
    value = values[rule.condition.measure]
    seen = dataclasses.replace(
        state, value=value, evaluated_at=now, rule=rule.rule, queue=rule.queue
    )
    if not rule.holds(values):
        after = dataclasses.replace(seen, state=OK, since=None)
        if state.state == FIRING:
            return dataclasses.replace(after, resolved_at=now), _event(rule, "resolved", value, now)
        return after, None
    if state.state == FIRING:
        return seen, None
    since = state.since if state.state == PENDING and state.since is not None else now
    if now - since >= rule.hold_for:
        after = dataclasses.replace(seen, state=FIRING, since=since, fired_at=now)
        return after, _event(rule, "firing", value, now)
    return dataclasses.replace(seen, state=PENDING, since=since), None


def _event(rule: AlertRule, status: str, value: float, now: float) -> AlertEvent:
    return AlertEvent(rule.name, status, rule.rule, rule.queue, value, now, rule.webhook)


# -- reading rules ----------------------------------------------------------------------
def parse_rule(
    name: str,
    rule: str,
    *,
    queue: str | None = None,
    window: float = DEFAULT_WINDOW,
    webhook: str | None = None,
) -> AlertRule:
    """An `AlertRule` from its text; `ConfigurationError` says what is wrong with it."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 100
        or ":" in name
        or any(ord(c) < 32 for c in name)
    ):
        raise ConfigurationError(
            f"an alert's name is 1 to 100 characters without ':' or control characters, "
            f"not {name!r}"
        )
    try:
        check_limit_name(f"alert:{name}", "alert")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if not isinstance(rule, str):
        raise ConfigurationError(f"alert {name!r}: its rule is text, not {rule!r}")
    if not isinstance(window, int | float) or not math.isfinite(window) or not window >= 60:
        raise ConfigurationError(f"alert {name!r}: window must be 60 seconds or more")
    if webhook is not None and not _is_http_url(webhook):
        raise ConfigurationError(
            f"alert {name!r}: the webhook must be an http(s) URL with a host, not {webhook!r}"
        )
    text = " ".join(rule.split())
    if text.lower() == "no live workers":
        condition, hold_for, guard = Condition("live_workers", "==", 0.0), 0.0, None
    else:
        head, _, guard_text = text.partition(" while ")
        head, _, for_text = head.partition(" for ")
        condition = _condition(name, head)
        guard = _condition(name, guard_text) if guard_text else None
        try:
            hold_for = parse_duration(for_text) if for_text else 0.0
        except ValueError as exc:
            raise ConfigurationError(f"alert {name!r}: {exc}") from None
    return AlertRule(name, text, condition, hold_for, guard, queue, float(window), webhook)


def _condition(name: str, text: str) -> Condition:
    match = _CONDITION.match(text)
    if match is None:
        raise ConfigurationError(
            f"alert {name!r}: {text!r} is not a condition such as 'depth > 1000' "
            f"(measures: {', '.join(MEASURES)}; comparisons: {' '.join(COMPARISONS)})"
        )
    measure, comparison, threshold = match.groups()
    if measure not in MEASURES:
        raise ConfigurationError(
            f"alert {name!r}: unknown measure {measure!r} (one of {', '.join(MEASURES)})"
        )
    return Condition(measure, comparison, _threshold(name, measure, threshold))


def _threshold(name: str, measure: str, text: str) -> float:
    value: float | None = None
    try:
        if measure == "oldest_wait":
            value = parse_duration(text)
        elif measure == "error_rate":
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        elif measure == "throughput":
            count, _, unit = text.partition("/")
            value = float(count) / _RATE_UNITS[unit or "s"]
        else:
            value = float(text)
    except (ValueError, KeyError):
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        hints = {
            "oldest_wait": "a duration such as 10m",
            "error_rate": "a percentage such as 5% (or 0.05)",
            "throughput": "a rate such as 1/s, 60/m or 1000/h",
        }
        raise ConfigurationError(
            f"alert {name!r}: {text!r} is not a threshold for {measure} "
            f"({hints.get(measure, 'a number, 0 or more')})"
        )
    return value


def _threshold_text(measure: str, value: float) -> str:
    if measure == "error_rate":
        return f"{value * 100:g}%"
    if measure == "throughput":
        return f"{value:g}/s"
    if measure == "oldest_wait":
        return f"{value:g}s"
    return f"{value:g}"


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
