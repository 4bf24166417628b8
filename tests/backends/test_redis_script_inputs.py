"""Redis scripts check every input before their first write (Redis does not roll a script back).

The engine's Python side already refuses bad values; these tests call the scripts themselves
with one bad argument each, as a caller that bypassed it would, and check that the script
answers with an error and that not one key of the store changed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from tests.backends import test_redis

from stagecrew.backends.base import Ack, AckKind, JobFilter, Retention
from stagecrew.backends.fairness import STALE_AFTER
from stagecrew.backends.limit_states import LimitSwap
from stagecrew.backends.redis import RedisBackend, scripts
from stagecrew.backends.redis.backend import LOST_ARGS
from stagecrew.backends.redis.records import claimed_jobs
from stagecrew.clock import FakeClock
from stagecrew.job import JobState, NewJob

PAYLOAD = '{"args":[],"kwargs":{}}'
LEASE = 30.0
OWN_SCRIPTS = frozenset(scripts.ALL_SCRIPTS) - {scripts.CLAIM, scripts.ACK, scripts.HEARTBEAT}
"""The scripts whose inputs are checked here; claim, ack and heartbeat have tests of their own."""


@pytest.fixture(scope="module", autouse=True)
def _redis_server() -> None:
    test_redis._server_or_skip()


@pytest.fixture
def backend() -> Iterator[RedisBackend]:
    prefixes = test_redis.Prefixes(test_redis.URL)
    made = RedisBackend(prefixes.url_for(), FakeClock())
    try:
        yield made
    finally:
        made.close()
        prefixes.delete()


def job(task: str = "t", **fields: Any) -> NewJob:
    return NewJob(task=task, payload=PAYLOAD, **fields)


def every_state(backend: RedisBackend) -> None:
    """One job in each state (and an idempotency key), so that a stray write would show."""
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    backend.enqueue([job("waiting", idempotency_key="k"), job("later", delay=3600.0)])
    backend.enqueue([job("run"), job("ok"), job("fail"), job("stop")])
    claimed = {c.task: c for c in backend.claim(["default"], "w", 10, LEASE)}
    assert {"waiting", "run", "ok", "fail", "stop"} <= set(claimed)
    backend.ack(
        [
            Ack(claimed["ok"].ref, AckKind.COMPLETE, result="1"),
            Ack(claimed["fail"].ref, AckKind.DEAD_LETTER),
            Ack(claimed["waiting"].ref, AckKind.RELEASE),
        ]
    )
    backend.cancel(claimed["stop"].id)
    backend.enqueue([job("cancelled")])
    [cancelled] = backend.list_jobs(JobFilter(tasks=frozenset({"cancelled"})))
    backend.cancel(cancelled.id)
    backend.swap_limits(
        [LimitSwap("rate:gone", None, "1", 1.0), LimitSwap("rate:kept", None, "2", 86_400.0)]
    )
    clock.advance(LEASE + 1)  # the running jobs' leases have expired: a rescue would write


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    keys = sorted(client.scan_iter(match=f"{{{prefix}*"))
    return {key: client.dump(key) for key in keys}


FAR = repr(math.inf)
STALE = repr(STALE_AFTER)
LOST_TYPE, LOST_MESSAGE, LOST_KIND, LOST_CANCELLED_KIND = LOST_ARGS
# the four key fields of a 13-field enqueue job (concurrency key, window, unique key, unique
# states): one bad
KEYS_BAD_WINDOW = ["", "-1", "", ""]
KEYS_NO_UNIQUE = ["", "", "", "running"]
KEYS_UNIQUE_FORM = ["", "", "u", "running"]
# fire_schedule.lua's fields of one tick job after its tick (id, task, payload, priority, run_at,
# delay, max_attempts), then its five keys (idempotency, fairness, concurrency, unique key and
# states): good ones, and a whole call of one job at tick 90 up to its keys
FIRE_JOB = ["", "t", PAYLOAD, "0", "", "0.0", "3"]
FIRE_KEYS = ["=k", "", "", "", ""]
FIRE_ONE = ["", "s", "", "100.0", 1, "90.0", *FIRE_JOB]
KEYS_CONCURRENCY_FORM = ["c", "", "=u", "running"]
PREFIX = "<the backend's key prefix>"
"""Replaced by the test's own key prefix in a call's arguments (claim_capped.lua takes it)."""


def bad_lost_records(name: str, lead: list[Any]) -> list[Any]:
    """Calls of rescue.lua or release_worker.lua, good but for one "worker lost" field."""
    records = {
        "type-empty": ["", LOST_MESSAGE, LOST_KIND, LOST_CANCELLED_KIND],
        "message-without-owner": [LOST_TYPE, "worker lost", LOST_KIND, LOST_CANCELLED_KIND],
        "message-bad-format": [LOST_TYPE, "worker %s lost %d", LOST_KIND, LOST_CANCELLED_KIND],
        "kind-empty": [LOST_TYPE, LOST_MESSAGE, "", LOST_CANCELLED_KIND],
        "cancelled-kind-missing": [LOST_TYPE, LOST_MESSAGE, LOST_KIND],
    }
    return [
        pytest.param(name, [*lead, *record], id=f"{name}-lost-{what}")
        for what, record in records.items()
    ]


# A good claim_capped.lua call, after the tag: now, worker, limit, lease, promotion batch, walk
# bound, prefix, scope, the queues, then the task, queue and key caps.
CAPPED = ["", "w", 10, "30.0", 1000, 10_000, PREFIX, "store", 1, "default", 1, "t", 1, 0, 0]
CAPPED_REFUSALS = {
    "now-nan": ({0: "nan"}, "now"),
    "worker-empty": ({1: ""}, "worker id"),
    "limit-fraction": ({2: "1.5"}, "limit"),
    "lease-negative": ({3: "-1"}, "lease seconds"),
    "promotion-negative": ({4: -1}, "promotion batch"),
    "walk-zero": ({5: 0}, "walk bound"),
    "walk-fraction": ({5: "10.5"}, "walk bound"),
    "prefix-empty": ({6: ""}, "prefix"),
    "prefix-braces": ({6: "{x}"}, "prefix"),
    "scope": ({7: "cluster"}, "scope"),
    "queue-count-zero": ({8: 0}, "queue count"),
    "queue-count-over": ({8: 9}, "queue count"),
    "queue-other-than-keys": ({9: "other"}, "queue name"),
    "task-cap-zero": ({11: "t", 12: 0}, "task cap"),
    "task-cap-fraction": ({12: "1.5"}, "task cap"),
    "task-cap-name-empty": ({11: ""}, "task cap name"),
    "task-cap-count": ({10: 3}, "task cap count"),
    "queue-cap-count": ({13: "x"}, "queue cap count"),
    "key-cap-count": ({14: -1}, "key cap count"),
}
"""What claim_capped.lua names when it refuses: changes to CAPPED, and the bad argument."""
CAPPED_LONGER = {
    "queue-twice": (
        ["", "w", 10, "30", 1000, 10, PREFIX, "store", 2, "default", "default"],
        "queue name",
    ),
    "queue-scope-several": (
        ["", "w", 10, "30", 1000, 10, PREFIX, "queue", 2, "default", "b"],
        "queue count",
    ),
    "queue-cap-nan": ([*CAPPED[:13], 1, "default", "nan", 0], "queue cap"),
    "key-cap-inf": ([*CAPPED[:14], 1, "t", "inf"], "key cap"),
    "argument-count": ([*CAPPED, "extra"], "argument count"),
}


def bad_capped_claims() -> list[Any]:
    """claim_capped.lua calls, each with one bad argument."""
    calls = []
    for what, (changes, _) in CAPPED_REFUSALS.items():
        args = list(CAPPED)
        for at, value in changes.items():
            args[at] = value
        calls.append(pytest.param(scripts.CLAIM_CAPPED, args, id=f"claim-capped-{what}"))
    for what, (args, _) in CAPPED_LONGER.items():
        calls.append(pytest.param(scripts.CLAIM_CAPPED, args, id=f"claim-capped-{what}"))
    return calls


# A good swap_limits.lua call of one swap, after the tag: now, n, then name, expected version,
# new version, ttl, value.
SWAP = ["", 1, "rate:a", "", "7", "60.0", "1"]
LIMIT_REFUSALS = {
    "read-limits-now-nan": (scripts.READ_LIMITS, ["nan", "rate:a"], "now"),
    "read-limits-name-empty": (scripts.READ_LIMITS, ["", "rate:a", ""], "limit name"),
    "swap-limits-now-nan": (scripts.SWAP_LIMITS, ["nan", *SWAP[1:]], "now"),
    "swap-limits-count": (scripts.SWAP_LIMITS, ["", "one", *SWAP[2:]], "swap count"),
    "swap-limits-argument-count": (scripts.SWAP_LIMITS, ["", 2, *SWAP[2:]], "argument count"),
    "swap-limits-name-empty": (scripts.SWAP_LIMITS, ["", 1, "", *SWAP[3:]], "limit name"),
    "swap-limits-name-twice": (
        scripts.SWAP_LIMITS,
        ["", 2, *SWAP[2:], "rate:a", "", "8", "60.0", "1"],
        "limit name",
    ),
    "swap-limits-expected-leading-zero": (
        scripts.SWAP_LIMITS,
        ["", 1, "rate:a", "07", "8", "60.0", "1"],
        "expected version",
    ),
    "swap-limits-version-zero": (
        scripts.SWAP_LIMITS,
        ["", 1, "rate:a", "", "0", "60.0", "1"],
        "new version",
    ),
    "swap-limits-version-exponent": (
        scripts.SWAP_LIMITS,
        ["", 1, "rate:a", "", "1e3", "60.0", "1"],
        "new version",
    ),
    "swap-limits-version-too-long": (
        scripts.SWAP_LIMITS,
        ["", 1, "rate:a", "", "1" * 20, "60.0", "1"],
        "new version",
    ),
    "swap-limits-version-kept": (
        scripts.SWAP_LIMITS,
        ["", 1, "rate:kept", "7", "7", "60.0", "1"],
        "new version",
    ),
    "swap-limits-ttl-zero": (scripts.SWAP_LIMITS, [*SWAP[:5], "0", "1"], "ttl"),
    "swap-limits-ttl-negative": (scripts.SWAP_LIMITS, [*SWAP[:5], "-1", "1"], "ttl"),
    "swap-limits-ttl-nan": (scripts.SWAP_LIMITS, [*SWAP[:5], "nan", "1"], "ttl"),
    "swap-limits-ttl-inf": (scripts.SWAP_LIMITS, [*SWAP[:5], FAR, "1"], "ttl"),
    "list-limits-now-nan": (scripts.LIST_LIMITS, ["nan", "0", 10, ""], "now"),
    "list-limits-cursor": (scripts.LIST_LIMITS, ["", "-1", 10, ""], "cursor"),
    "list-limits-count-zero": (scripts.LIST_LIMITS, ["", "0", 0, ""], "count"),
    "list-limits-argument-count": (scripts.LIST_LIMITS, ["", "0", 10], "argument count"),
    "prune-limits-now-inf": (scripts.PRUNE_LIMITS, [FAR, 10], "now"),
    "prune-limits-limit-zero": (scripts.PRUNE_LIMITS, ["", 0], "limit"),
    "prune-limits-limit-fraction": (scripts.PRUNE_LIMITS, ["", "1.5"], "limit"),
}
"""The limit-state scripts' bad calls (script, ARGV after the store's tag) and what each
names; they run on the limit records' keys, where a swap or a prune would write."""
LIMIT_SCRIPTS = frozenset(
    {scripts.READ_LIMITS, scripts.SWAP_LIMITS, scripts.LIST_LIMITS, scripts.PRUNE_LIMITS}
)


INFO = '{"host":"h","pid":1,"queues":["default"],"concurrency":1,"busy":0,"version":"0"}'
REGISTRY_REFUSALS = {
    "record-worker-now-nan": (scripts.RECORD_WORKER, ["nan", "w", "30.0", "0", INFO], "now"),
    "record-worker-id-empty": (scripts.RECORD_WORKER, ["", "", "30.0", "0", INFO], "worker id"),
    "record-worker-ttl-zero": (scripts.RECORD_WORKER, ["", "w", "0", "0", INFO], "ttl"),
    "record-worker-ttl-inf": (scripts.RECORD_WORKER, ["", "w", FAR, "0", INFO], "ttl"),
    "record-worker-stopped": (scripts.RECORD_WORKER, ["", "w", "30.0", "yes", INFO], "stopped"),
    "record-worker-no-info": (scripts.RECORD_WORKER, ["", "w", "30.0", "0"], "info"),
    "list-workers-now-inf": (scripts.LIST_WORKERS, [FAR], "now"),
    "prune-workers-keep-negative": (scripts.PRUNE_WORKERS, ["", "-1", 10], "keep"),
    "prune-workers-keep-nan": (scripts.PRUNE_WORKERS, ["", "nan", 10], "keep"),
    "prune-workers-limit-zero": (scripts.PRUNE_WORKERS, ["", "0", 0], "limit"),
}
COUNT_KEY = '["q","t","succeeded"]'
COUNT_REFUSALS = {
    "add-counts-now-nan": (scripts.ADD_COUNTS, ["nan", 1, COUNT_KEY, 1], "now"),
    "add-counts-argument-count": (scripts.ADD_COUNTS, ["", 2, COUNT_KEY, 1], "argument count"),
    "add-counts-key-empty": (scripts.ADD_COUNTS, ["", 2, COUNT_KEY, 1, "", 1], "count key"),
    "add-counts-zero": (scripts.ADD_COUNTS, ["", 2, COUNT_KEY, 1, COUNT_KEY, 0], "count"),
    "add-counts-fraction": (scripts.ADD_COUNTS, ["", 1, COUNT_KEY, "1.5"], "count"),
    "read-counts-since-negative": (scripts.READ_COUNTS, ["", "-1"], "since"),
    "prune-counts-keep-nan": (scripts.PRUNE_COUNTS, ["", "nan", 10], "keep"),
    "prune-counts-limit-zero": (scripts.PRUNE_COUNTS, ["", "0", 0], "limit"),
}
"""The job count scripts' bad calls; they run on the counts' keys."""
"""The worker registry scripts' bad calls (script, ARGV after the store's tag) and what each
names; they run on the registry's keys."""
REGISTRY_SCRIPTS = frozenset({scripts.RECORD_WORKER, scripts.LIST_WORKERS, scripts.PRUNE_WORKERS})
COUNT_SCRIPTS = frozenset({scripts.ADD_COUNTS, scripts.READ_COUNTS, scripts.PRUNE_COUNTS})


def bad_limit_calls() -> list[Any]:
    calls = {**LIMIT_REFUSALS, **REGISTRY_REFUSALS, **COUNT_REFUSALS}
    return [pytest.param(name, args, id=what) for what, (name, args, _) in calls.items()]


BAD_CALLS: list[Any] = [
    # script, ARGV after the tag: one of them is bad
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "nan", "0.0", "3", "=new", ""],
        id="enqueue-run_at-nan",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "", "inf", "3", "=new", ""],
        id="enqueue-delay-inf",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "", "-1", "3", "=new", ""],
        id="enqueue-delay-negative",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "1.5", "", "0.0", "3", "", ""],
        id="enqueue-priority-fraction",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "", "0.0", "0", "", ""],
        id="enqueue-max_attempts-zero",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 2, STALE, 9, "", "t", PAYLOAD, "0", "", "0.0", "3", "=new", ""],
        id="enqueue-argument-count",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["nan", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "", "0.0", "3", "", ""],
        id="enqueue-now-nan",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "tenant"],
        id="enqueue-fairness-key-form",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 9, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "="],
        id="enqueue-fairness-key-empty",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, "nan", 9, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "=tenant"],
        id="enqueue-fairness-idle-nan",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 11, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "", "", ""],
        id="enqueue-width",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 12, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "", "", "", ""],
        id="enqueue-width-of-the-former-keyed-form",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 10, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "", "customer"],
        id="enqueue-concurrency-key-form",
    ),
    pytest.param(
        scripts.ENQUEUE,
        ["", "default", 1, STALE, 10, "", "t", PAYLOAD, "0", "", "0.0", "3", "", "", "="],
        id="enqueue-concurrency-key-empty",
    ),
    pytest.param(
        scripts.ENQUEUE,
        [
            "",
            "default",
            1,
            STALE,
            13,
            "",
            "t",
            PAYLOAD,
            "0",
            "",
            "0.0",
            "3",
            "=k",
            "",
            *KEYS_CONCURRENCY_FORM,
        ],
        id="enqueue-concurrency-key-form-with-keys",
    ),
    pytest.param(
        scripts.ENQUEUE,
        [
            "",
            "default",
            1,
            STALE,
            13,
            "",
            "t",
            PAYLOAD,
            "0",
            "",
            "0.0",
            "3",
            "=k",
            "",
            *KEYS_BAD_WINDOW,
        ],
        id="enqueue-idempotency-window-negative",
    ),
    pytest.param(
        scripts.ENQUEUE,
        [
            "",
            "default",
            1,
            STALE,
            13,
            "",
            "t",
            PAYLOAD,
            "0",
            "",
            "0.0",
            "3",
            "",
            "",
            *KEYS_NO_UNIQUE,
        ],
        id="enqueue-unique-states-without-key",
    ),
    pytest.param(
        scripts.ENQUEUE,
        [
            "",
            "default",
            1,
            STALE,
            13,
            "",
            "t",
            PAYLOAD,
            "0",
            "",
            "0.0",
            "3",
            "",
            "",
            *KEYS_UNIQUE_FORM,
        ],
        id="enqueue-unique-key-form",
    ),
    *bad_capped_claims(),
    pytest.param(scripts.AGE_PRIORITIES, ["nan", "60.0", "0", 10], id="age-now-nan"),
    pytest.param(scripts.AGE_PRIORITIES, ["", "0", "0", 10], id="age-every-zero"),
    pytest.param(scripts.AGE_PRIORITIES, ["", "inf", "0", 10], id="age-every-inf"),
    pytest.param(scripts.AGE_PRIORITIES, ["", "60.0", "0.5", 10], id="age-floor-fraction"),
    pytest.param(scripts.AGE_PRIORITIES, ["", "60.0", "0", 0], id="age-limit-zero"),
    pytest.param(scripts.AGE_PRIORITIES, ["", "60.0", "0"], id="age-argument-count"),
    pytest.param(scripts.CANCEL, ["nan", "1"], id="cancel-now-nan"),
    pytest.param(scripts.CANCEL, ["", "1 OR 2"], id="cancel-id"),
    pytest.param(scripts.REQUEUE, [FAR, "{}", "dead", 0, 100], id="requeue-now-inf"),
    pytest.param(
        scripts.REQUEUE,
        ["", '{"finished_before":"soon"}', "dead", 0, 100],
        id="requeue-finished_before",
    ),
    pytest.param(scripts.REQUEUE, ["", "{not json", "dead", 0, 100], id="requeue-filter-json"),
    pytest.param(scripts.REQUEUE, ["", "{}", "running", 0, 100], id="requeue-state"),
    pytest.param(scripts.REQUEUE, ["", "{}", "dead", 0, "many"], id="requeue-count"),
    pytest.param(scripts.REQUEUE, ["", "{}", "", 0, 0, "5", "x"], id="requeue-ids"),
    pytest.param(scripts.RESCUE, [FAR, 3, 1000], id="rescue-now-inf"),
    pytest.param(scripts.RESCUE, ["", "nan", 1000], id="rescue-max_lost-nan"),
    pytest.param(scripts.RESCUE, ["", 3, 0], id="rescue-batch-zero"),
    pytest.param(scripts.PRUNE, [FAR, 1000, "0", "0", "0"], id="prune-now-inf"),
    pytest.param(scripts.PRUNE, ["", 1000, "0", "nan", "0"], id="prune-horizon-nan"),
    pytest.param(scripts.PRUNE, ["", 1000, "0", "0", "-5"], id="prune-horizon-negative"),
    pytest.param(scripts.PRUNE, ["", "all", "0", "0", "0"], id="prune-limit"),
    pytest.param(scripts.PURGE, ['{"ids":["x"]}', "dead", 0, 100], id="purge-filter-ids"),
    pytest.param(scripts.PURGE, ['{"finished_before":"nan"}', "dead", 0, 100], id="purge-fb"),
    pytest.param(scripts.PURGE, ["{}", "available", 0, 100], id="purge-state"),
    pytest.param(scripts.PURGE, ["{}", "", 0, 0, "1", "-2"], id="purge-ids"),
    pytest.param(scripts.LIST_PAGE, ["{}", "abc", 10, 100], id="list_page-cursor"),
    pytest.param(scripts.LIST_PAGE, ['{"before_id":"x"}', "", 10, 100], id="list_page-filter"),
    pytest.param(scripts.PEEK, ["nan", 10, 1000], id="peek-now-nan"),
    pytest.param(scripts.PEEK, ["", 10, "inf"], id="peek-batch-inf"),
    pytest.param(scripts.SUMMARY, ["", "many"], id="summary-bands"),
    pytest.param(scripts.RELEASE_WORKER, ["nan", "w", 3], id="release-worker-now-nan"),
    pytest.param(scripts.RELEASE_WORKER, ["", "", 3], id="release-worker-no-worker"),
    pytest.param(scripts.RELEASE_WORKER, ["", "w", 0], id="release-worker-max-lost-0"),
    pytest.param(scripts.RELEASE_WORKER, ["", "w", "1.5"], id="release-worker-max-lost-half"),
    pytest.param(scripts.FIRE_SCHEDULE, ["", "", "", "100.0", 0], id="fire-no-name"),
    pytest.param(scripts.FIRE_SCHEDULE, ["", "s", "nan", "100.0", 0], id="fire-expected-nan"),
    pytest.param(scripts.FIRE_SCHEDULE, ["", "s", "100.0", "100.0", 0], id="fire-not-later"),
    pytest.param(scripts.FIRE_SCHEDULE, ["", "s", "", "inf", 0], id="fire-advance-inf"),
    pytest.param(scripts.FIRE_SCHEDULE, ["", "s", "", "100.0", 1], id="fire-argument-count"),
    pytest.param(
        scripts.FIRE_SCHEDULE,
        ["", "s", "", "100.0", 1, "200.0", *FIRE_JOB, *FIRE_KEYS],
        id="fire-tick-after-advance",
    ),
    pytest.param(
        scripts.FIRE_SCHEDULE,
        ["", "s", "50.0", "100.0", 1, "40.0", *FIRE_JOB, *FIRE_KEYS],
        id="fire-tick-before-expected",
    ),
    pytest.param(
        scripts.FIRE_SCHEDULE,
        ["", "s", "", "100.0", 1, "90.0", "", "t", PAYLOAD, "0", "", "nan", "3", *FIRE_KEYS],
        id="fire-delay-nan",
    ),
    pytest.param(
        scripts.FIRE_SCHEDULE, [*FIRE_ONE, "=k", "k", "", "", ""], id="fire-fairness-key-form"
    ),
    pytest.param(
        scripts.FIRE_SCHEDULE, [*FIRE_ONE, "", "", "k", "", ""], id="fire-concurrency-key-form"
    ),
    pytest.param(
        scripts.FIRE_SCHEDULE, [*FIRE_ONE, "", "", "", "u", "running"], id="fire-unique-key-form"
    ),
    pytest.param(
        scripts.FIRE_SCHEDULE,
        [*FIRE_ONE, "", "", "", "", "running"],
        id="fire-unique-states-without-key",
    ),
    pytest.param(scripts.SCHEDULE_PAUSED, ["", "1", "100.0"], id="paused-no-name"),
    pytest.param(scripts.SCHEDULE_PAUSED, ["s", "yes", "100.0"], id="paused-flag"),
    pytest.param(scripts.SCHEDULE_PAUSED, ["s", "0", "nan"], id="paused-time-nan"),
    pytest.param(scripts.QUEUE_CONTROL, ["stop"], id="queue-control-action"),
    pytest.param(scripts.QUEUE_CONTROL, [""], id="queue-control-no-action"),
    pytest.param(scripts.QUEUE_CONTROL, ["pause", "again"], id="queue-control-argument-count"),
    pytest.param(scripts.STORE_STEP, ["nan", 3, 1, "step", "a", "1"], id="step-now-nan"),
    pytest.param(scripts.STORE_STEP, ["", "3x", 1, "step", "a", "1"], id="step-id"),
    pytest.param(scripts.STORE_STEP, ["", 3, "1.5", "step", "a", "1"], id="step-token"),
    pytest.param(scripts.STORE_STEP, ["", 3, 1, "result", "a", "1"], id="step-kind"),
    pytest.param(scripts.STORE_STEP, ["", 3, 1, "step", "", "1"], id="step-no-name"),
    pytest.param(scripts.STORE_STEP, ["", 3, 1, "state", "", ""], id="step-no-value"),
    pytest.param(scripts.STORE_STEP, ["", 3, 1, "step", "a"], id="step-argument-count"),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "nan",
            "wf1",
            "[[1,1]]",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-now-nan",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "no spaces",
            "[[1,1]]",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-id",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,2]]",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-shape-sizes",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "{not json",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-shape-json",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,1]]",
            "maybe",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-on-failure",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,1]]",
            "fail",
            "inf",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-held-inf",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,1]]",
            "fail",
            "253402300799.0",
            1,
            "x1",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
            "0",
        ],
        id="workflow-member-id",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,1]]",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "0",
            "0",
            "0",
        ],
        id="workflow-max-attempts",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,1]]",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "1",
            "0",
        ],
        id="workflow-step-outside",
    ),
    pytest.param(
        scripts.ENQUEUE_WORKFLOW,
        [
            "",
            "wf1",
            "[[1,1]]",
            "fail",
            "253402300799.0",
            1,
            "900001",
            "t",
            '{"args":[],"kwargs":{}}',
            "0",
            "3",
            "0",
        ],
        id="workflow-argument-count",
    ),
    pytest.param(scripts.CANCEL_WORKFLOW, ["nan", "wf1"], id="cancel-workflow-now-nan"),
    pytest.param(scripts.CANCEL_WORKFLOW, ["", "a b"], id="cancel-workflow-id"),
    *bad_limit_calls(),
    *bad_lost_records(scripts.RESCUE, ["", 3, 1000]),
    *bad_lost_records(scripts.RELEASE_WORKER, ["", "w", 3]),
]


# What enqueue.lua and fire_schedule.lua name when they refuse each call: the bad field, not
# a miscount of them.
ENQUEUE_REFUSALS = {
    "enqueue-run_at-nan": "run_at",
    "enqueue-delay-inf": "delay",
    "enqueue-delay-negative": "delay",
    "enqueue-priority-fraction": "priority",
    "enqueue-max_attempts-zero": "max_attempts",
    "enqueue-argument-count": "argument count",
    "enqueue-now-nan": "now",
    "enqueue-fairness-key-form": "fairness key",
    "enqueue-fairness-key-empty": "fairness key",
    "enqueue-fairness-idle-nan": "fairness idle seconds",
    "enqueue-width": "argument count",
    "enqueue-width-of-the-former-keyed-form": "argument count",
    "enqueue-concurrency-key-form": "concurrency key",
    "enqueue-concurrency-key-empty": "concurrency key",
    "enqueue-concurrency-key-form-with-keys": "concurrency key",
    "enqueue-idempotency-window-negative": "idempotency window",
    "enqueue-unique-states-without-key": "unique states",
    "enqueue-unique-key-form": "unique key",
}
FIRE_REFUSALS = {
    "fire-no-name": "schedule name",
    "fire-expected-nan": "expected last tick",
    "fire-not-later": "new last tick",
    "fire-advance-inf": "new last tick",
    "fire-argument-count": "argument count",
    "fire-tick-after-advance": "tick",
    "fire-tick-before-expected": "tick",
    "fire-delay-nan": "delay",
    "fire-fairness-key-form": "fairness key",
    "fire-concurrency-key-form": "concurrency key",
    "fire-unique-key-form": "unique key",
    "fire-unique-states-without-key": "unique states",
}
REFUSALS = {
    **ENQUEUE_REFUSALS,
    **FIRE_REFUSALS,
    **{f"claim-capped-{what}": reason for what, (_, reason) in CAPPED_REFUSALS.items()},
    **{f"claim-capped-{what}": reason for what, (_, reason) in CAPPED_LONGER.items()},
    **{what: reason for what, (_, _, reason) in LIMIT_REFUSALS.items()},
    **{what: reason for what, (_, _, reason) in REGISTRY_REFUSALS.items()},
    **{what: reason for what, (_, _, reason) in COUNT_REFUSALS.items()},
}
"""What the scripts that name the field they refuse say, per call."""
NAMING = (
    frozenset({scripts.ENQUEUE, scripts.CLAIM_CAPPED, scripts.FIRE_SCHEDULE})
    | LIMIT_SCRIPTS
    | REGISTRY_SCRIPTS
    | COUNT_SCRIPTS
)


@pytest.mark.parametrize(("name", "args"), BAD_CALLS)
def test_script_refuses_a_bad_argument_before_writing_anything(
    backend: RedisBackend, name: str, args: list[Any], request: pytest.FixtureRequest
) -> None:
    every_state(backend)
    client = redis.Redis.from_url(backend._settings.redis_url)
    call_id = request.node.callspec.id
    reason = REFUSALS.get(call_id, "") if name in NAMING else ""
    assert reason or name not in NAMING, f"say what {name}.lua refuses in {call_id}"
    args = [backend.prefix if a == PREFIX else a for a in args]
    try:
        before = snapshot(client, backend.prefix)
        queue = backend._keys.queue("default")
        keys, tag = queue.keys, queue.tag
        if name in LIMIT_SCRIPTS:
            keys, tag = (backend._keys.limits, backend._keys.limits_expiry), backend._keys.tag
        if name in REGISTRY_SCRIPTS:
            keys, tag = (backend._keys.workers, backend._keys.workers_seen), backend._keys.tag
        if name in COUNT_SCRIPTS:
            keys, tag = (backend._keys.counts, backend._keys.counts_buckets), backend._keys.tag
        source = scripts.script(name).text
        refusal = f"stagecrew: bad {re.escape(reason)}:" if reason else "stagecrew: bad"
        with pytest.raises(redis.ResponseError, match=refusal):
            client.eval(source, len(keys), *keys, tag, *args)
        assert snapshot(client, backend.prefix) == before
    finally:
        client.close()


def test_every_writing_script_is_exercised_with_bad_input() -> None:
    tested = {param.values[0] for param in BAD_CALLS}
    assert tested == OWN_SCRIPTS


@pytest.mark.parametrize("name", sorted(scripts.ALL_SCRIPTS))
def test_every_script_header_says_what_it_validates(name: str) -> None:
    source = scripts.script(name).text
    header = re.search(rf"^-- {name}:.*?(?=^[^-])", source, re.S | re.M)
    assert header is not None, f"{name}.lua has no header"
    assert "-- validates:" in header.group(0), f"{name}.lua's header has no '-- validates:' line"


def test_the_rule_is_written_once_at_the_top_of_the_shared_library() -> None:
    for name in OWN_SCRIPTS:
        assert "THE RULE FOR EVERY SCRIPT: check every input before the first write" in (
            scripts.script(name).text
        )


@pytest.mark.parametrize(
    "times",
    [{"run_at": math.nan}, {"delay": math.nan}, {"run_at": math.inf}],
    ids=["run_at-nan", "delay-nan", "run_at-inf"],
)
def test_a_refused_enqueue_leaves_no_job_hash_and_no_idempotency_entry(
    backend: RedisBackend, times: dict[str, float]
) -> None:
    """The orphan once left by a NaN run_at: a job hash no index held, and its key taken."""
    client = redis.Redis.from_url(backend._settings.redis_url)
    try:
        with pytest.raises(ValueError, match="finite"):
            backend.enqueue([job("good", idempotency_key="a"), job(idempotency_key="b", **times)])
        keys = [k.decode() for k in client.scan_iter(match=f"{{{backend.prefix}*")]
        assert [k for k in keys if ":job:" in k] == []
        assert not client.exists(backend._keys.idempotency)
        assert backend.list_jobs(JobFilter()) == []
    finally:
        client.close()


def test_good_arguments_still_pass_every_check(backend: RedisBackend) -> None:
    every_state(backend)
    assert backend.requeue(JobFilter(states=frozenset({JobState.DEAD}))) == 1
    assert backend.purge(JobFilter(states=frozenset({JobState.CANCELLED}))) == 1
    assert backend.rescue().total == 2
    assert {s.queue for s in backend.stats()} == {"default"}
    client = redis.Redis.from_url(backend._settings.redis_url)
    try:
        queue = backend._keys.queue("default")
        capped = [backend.prefix if a == PREFIX else a for a in CAPPED]
        source = scripts.script(scripts.CLAIM_CAPPED).text
        backend.enqueue([job("t"), job("t")])  # CAPPED caps task "t" at 1
        [reply] = client.eval(source, len(queue.keys), *queue.keys, queue.tag, *capped)
        tasks = [c.task for c in claimed_jobs("default", reply)[1]]
        assert tasks.count("t") == 1 and len(tasks) > 1
    finally:
        client.close()


def test_purge_and_prune_delete_a_jobs_steps_key(backend: RedisBackend) -> None:
    """read_steps cannot see a leftover T:steps:<id> once its job is gone: look at the keys."""
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    backend.enqueue([job("a"), job("b")])
    for claimed in backend.claim(["default"], "w", 2, LEASE):
        assert backend.store_step(claimed.ref, "s", "1")
        assert backend.store_state(claimed.ref, "2")
        assert backend.ack([Ack.complete(claimed.ref)]) == [True]
    client = redis.Redis.from_url(backend._settings.redis_url)
    try:
        pattern = f"{{{backend.prefix}*:steps:*"
        assert len(list(client.scan_iter(match=pattern))) == 2
        assert backend.purge(JobFilter(ids=frozenset({1}))) == 1
        clock.advance(8 * 86_400.0)
        assert backend.prune(Retention()) == 1
        assert list(client.scan_iter(match=pattern)) == []
    finally:
        client.close()
