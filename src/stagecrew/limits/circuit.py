"""Circuit breakers as tasks declare them, and the state machine every worker shares.

`@app.task(circuit=dict(name="payments-api", failure_threshold=0.5, min_calls=20, window=60,
cooldown=30, probes=3))`: when at least `min_calls` attempts of the circuit's tasks ended in
the last `window` seconds and at least `failure_threshold` of them failed, the circuit opens,
fleet-wide. Jobs behind an open circuit wait, handed back without an attempt counted. After
`cooldown` seconds it is half-open: up to `probes` jobs run; when that many succeed it
closes, and one failure opens it again. Tasks naming one circuit share it.

The state is one record in the store (`circuit:<name>`, see `backends/limit_states.py`),
written by compare-and-set; this module is the state machine, as pure functions of that
record, the time (the store's) and what happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ..backends.limit_states import MAX_LIMIT_TTL
from ..errors import ConfigurationError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
SLOTS = 10
"""The window is counted in this many slots: outcomes older than the window drop out a slot
at a time, so the failure rate is that of the last `window` seconds to a tenth of it."""
RECORD_SLACK = 3_600.0
"""Seconds a circuit's record outlives its last change (an hour: `stagecrew circuits`
still shows a circuit that closed a while ago)."""


@dataclass(frozen=True, slots=True)
class Circuit:
    """A circuit breaker's settings (see the module docstring)."""

    name: str
    failure_threshold: float = 0.5
    min_calls: int = 20
    window: float = 60.0
    cooldown: float = 30.0
    probes: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 150:
            raise ConfigurationError(
                f"a circuit's name must be a non-empty str of at most 150 characters, "
                f"not {self.name!r}"
            )
        threshold = self.failure_threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0 < threshold <= 1
        ):
            raise ConfigurationError(f"circuit failure_threshold must be in (0, 1]: {threshold!r}")
        for what in ("min_calls", "probes"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"circuit {what} must be a whole number >= 1: {value!r}")
        for what in ("window", "cooldown"):
            value = getattr(self, what)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"circuit {what} must be seconds above 0: {value!r}")

    @property
    def record_name(self) -> str:
        return f"circuit:{self.name}"

    @property
    def held_retry(self) -> float:
        """Seconds after which a job held while the circuit is half-open is claimed again."""
        return max(1.0, self.cooldown / 10)

    @property
    def probe_timeout(self) -> float:
        """Seconds after which probes that never reported (their worker died) are written
        off and new ones are let through."""
        return max(self.cooldown, 10.0)

    @classmethod
    def coerce(cls, value: str | Circuit | Mapping[str, Any] | None) -> Circuit | None:
        if value is None or isinstance(value, Circuit):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            known = {"name", "failure_threshold", "min_calls", "window", "cooldown", "probes"}
            if set(value) - known or "name" not in value:
                raise ConfigurationError(
                    f"circuit takes name= (required), {', '.join(sorted(known - {'name'}))}; "
                    f"not {sorted(value)}"
                )
            return cls(**value)
        raise ConfigurationError(
            f"circuit must be a name, a dict(name=..., ...) or a Circuit, not {value!r}"
        )


@dataclass(frozen=True, slots=True)
class CircuitState:
    """A circuit's stored state (the record's JSON), in the store's time."""

    state: str = CLOSED
    until: float = 0.0
    """Open: when it turns half-open."""
    slots: tuple[tuple[float, int, int], ...] = ()
    """Closed: (slot start, successes, failures) of the window's slots, oldest first."""
    probes_out: int = 0
    """Half-open: probe jobs let through so far."""
    probes_ok: int = 0
    """Half-open: probe jobs that succeeded."""
    probe_deadline: float = 0.0
    """Half-open: when probes not heard of by then are written off."""
    held_open: bool = False
    """Opened by hand (`stagecrew circuits open`): open until closed by hand."""
    changed_at: float = 0.0
    opened: int = 0
    """How many times it opened."""

    @classmethod
    def from_text(cls, text: str | None) -> CircuitState:
        """The state a record holds; none (or one that is not a circuit's) is closed."""
        if text is None:
            return cls()
        try:
            data = orjson.loads(text)
            return cls(
                state=str(data["state"]),
                until=float(data["until"]),
                slots=tuple((float(s), int(o), int(f)) for s, o, f in data["slots"]),
                probes_out=int(data["probes_out"]),
                probes_ok=int(data["probes_ok"]),
                probe_deadline=float(data["probe_deadline"]),
                held_open=data["held_open"] is True,
                changed_at=float(data["changed_at"]),
                opened=int(data["opened"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return cls()

    def to_text(self) -> str:
        return orjson.dumps(
            {
                "state": self.state,
                "until": self.until,
                "slots": [list(s) for s in self.slots],
                "probes_out": self.probes_out,
                "probes_ok": self.probes_ok,
                "probe_deadline": self.probe_deadline,
                "held_open": self.held_open,
                "changed_at": self.changed_at,
                "opened": self.opened,
            }
        ).decode()

    def ttl(self, now: float) -> float:
        """Seconds its record must live: an hour past its last deadline, or, opened by hand,
        as long as a record may (30 days)."""
        if self.held_open:
            return MAX_LIMIT_TTL
        return max(self.until, self.probe_deadline, now) - now + RECORD_SLACK

    def counts(self, circuit: Circuit, now: float) -> tuple[int, int]:
        """(calls, failures) in the window at `now`."""
        live = [s for s in self.slots if s[0] > now - circuit.window]
        return sum(s[1] + s[2] for s in live), sum(s[2] for s in live)


@dataclass(frozen=True, slots=True)
class Gate:
    """What a circuit lets through of `count` jobs at once."""

    state: CircuitState
    admitted: int
    """The first `admitted` jobs start (as probes when `probes`)."""
    probes: bool
    retry_in: float
    """Seconds after which each job left is claimed again."""


def _opened(circuit: Circuit, state: CircuitState, now: float) -> CircuitState:
    return replace(
        state,
        state=OPEN,
        until=now + circuit.cooldown,
        slots=(),
        probes_out=0,
        probes_ok=0,
        changed_at=now,
        opened=state.opened + 1,
    )


def _closed(state: CircuitState, now: float) -> CircuitState:
    return replace(state, state=CLOSED, slots=(), probes_out=0, probes_ok=0, changed_at=now)


def current(circuit: Circuit, state: CircuitState, now: float) -> CircuitState:
    """The state at `now`: an open circuit past its cooldown is half-open; probes past their
    deadline are written off."""
    if state.held_open:
        return state
    if state.state == OPEN and now >= state.until:
        return replace(
            state,
            state=HALF_OPEN,
            probes_out=0,
            probes_ok=0,
            probe_deadline=now + circuit.probe_timeout,
            changed_at=now,
        )
    if state.state == HALF_OPEN and now >= state.probe_deadline:
        return replace(state, probes_out=0, probes_ok=0, probe_deadline=now + circuit.probe_timeout)
    return state


def gate(circuit: Circuit, state: CircuitState, now: float, count: int) -> Gate:
    """Let `count` claimed jobs through, or some of them as probes, or none."""
    state = current(circuit, state, now)
    if state.held_open:
        return Gate(state, 0, False, circuit.cooldown)
    if state.state == CLOSED:
        return Gate(state, count, False, 0.0)
    if state.state == OPEN:
        return Gate(state, 0, False, max(0.0, state.until - now))
    permits = max(0, circuit.probes - state.probes_out)
    admitted = min(count, permits)
    state = replace(state, probes_out=state.probes_out + admitted)
    return Gate(state, admitted, True, circuit.held_retry)


def record(
    circuit: Circuit,
    state: CircuitState,
    now: float,
    *,
    ok: int = 0,
    failed: int = 0,
    probes_ok: int = 0,
    probes_failed: int = 0,
) -> CircuitState:
    """Count attempts that ended: a closed circuit opens when its window fails too often; a
    half-open one closes on enough probe successes and opens again on a probe failure."""
    state = current(circuit, state, now)
    if state.held_open:
        return state
    if state.state == HALF_OPEN:
        if probes_failed:
            return _opened(circuit, state, now)
        passed = state.probes_ok + probes_ok
        if passed >= circuit.probes:
            return _closed(state, now)
        return replace(state, probes_ok=passed)
    if state.state == OPEN:
        return state  # outcomes of attempts that started before it opened
    width = circuit.window / SLOTS
    start = math.floor(now / width) * width
    slots = [s for s in state.slots if s[0] > now - circuit.window]
    if slots and slots[-1][0] == start:
        _, o, f = slots.pop()
        slots.append((start, o + ok + probes_ok, f + failed + probes_failed))
    else:
        slots.append((start, ok + probes_ok, failed + probes_failed))
    state = replace(state, slots=tuple(slots))
    calls, failures = state.counts(circuit, now)
    if calls >= circuit.min_calls and failures >= circuit.failure_threshold * calls:
        return _opened(circuit, state, now)
    return state


def opened_by_hand(state: CircuitState, now: float) -> CircuitState:
    """`stagecrew circuits open`: open, and held open until closed by hand."""
    return replace(state, state=OPEN, held_open=True, probes_out=0, probes_ok=0, changed_at=now)


def closed_by_hand(state: CircuitState, now: float) -> CircuitState:
    """`stagecrew circuits close`: closed, its window empty, and left to its outcomes again."""
    return _closed(replace(state, held_open=False), now)


def check_shared_circuits(tasks: Iterable[tuple[str, Circuit | None]]) -> None:
    """Tasks naming one circuit share its state: they must give it the same settings."""
    seen: dict[str, tuple[str, Circuit]] = {}
    for task, circuit in tasks:
        if circuit is None:
            continue
        first_task, first = seen.setdefault(circuit.name, (task, circuit))
        if first != circuit:
            raise ConfigurationError(
                f"tasks {first_task!r} and {task!r} name the circuit {circuit.name!r} with "
                "different settings; give them one Circuit"
            )
