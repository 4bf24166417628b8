"""Bad input written straight into the store, on SQLite, PostgreSQL and Redis.

Jobs here bypass the producer: raw rows and keys written with each engine's own
SQL or Redis commands (tests/support/raw_store.py), as an attacker with write
access to the store, a buggy script or a half-applied migration would leave them.
For every such job the guarantees are the same:

- the worker never crashes and never runs it;
- it is dead-lettered after exactly one attempt with an `unrunnable` error that says why;
- good jobs enqueued alongside keep flowing and succeed.

A job naming a task the worker does not have, with a payload that decodes, is
not bad input but a rolling deploy (a newer producer's task): it is handed back
unrun, without counting an attempt, to wait for a worker that has the task
(tests/integration/test_rolling_deploys.py). With a payload that does not
decode it is dead at once like any other.

Each test gets its own SQLite file, PostgreSQL schema or Redis key prefix.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagecrew import App, ErrorKind, JobState
from stagecrew.errors import InvalidArgumentsError, PayloadTooLargeError, SerializationError
from stagecrew.serialization import decode_payload
from stagecrew.testing.engines import engine_names
from stagecrew.worker.runner import Worker
from tests.support.processes import start_worker, stop, wait_for, write_app
from tests.support.raw_store import AsBlob, RawWriteRefused, write_raw_job
from tests.support.stores import fresh_store

ENGINES = engine_names(cross_process=True, variants=False)
"""Engines whose store a worker process shares, so the raw writes reach what it reads."""
VALID = b'{"args":["ok"],"kwargs":{}}'
"""A payload `probe` would run: bad inputs are built from it."""


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated store of `engine`: a file, a schema or a key prefix of this test's own."""
    with fresh_store(engine, tmp_path) as url:
        yield url


@dataclass
class Store:
    url: str
    app: App
    ran: list[Any]
    marker: Path

    def drain(self) -> None:
        asyncio.run(asyncio.wait_for(Worker(self.app, concurrency=4).drain(), 60))

    def write(self, task: str | bytes, payload: bytes, **options: Any) -> int | None:
        """Write one raw job; None where the engine itself refuses the value."""
        try:
            return write_raw_job(self.url, task, payload, **options)
        except RawWriteRefused:
            assert self.url.startswith("postgresql"), "only PostgreSQL refuses raw values"
            text = task if isinstance(task, bytes) else task.encode()
            assert not _utf8(payload) or b"\x00" in payload + text, (task, payload)
            return None

    def assert_dead_unrun(self, ids: list[int], *reasons: str) -> None:
        for job_id in ids:
            job = self.app.jobs.get(job_id)
            assert job.state is JobState.DEAD, (job.state, job.payload[:200], job.errors)
            assert job.attempt == 1, job
            assert len(job.errors) == 1, job.errors
            error = job.errors[0]
            assert error.kind is ErrorKind.UNRUNNABLE, error
            assert error.message, error
            if reasons:
                assert any(r in error.message for r in reasons), error.message
        assert self.ran == [], "a bad job ran"
        assert not self.marker.exists(), "the pickle payload was executed"

    def assert_handed_back_unrun(self, ids: list[int]) -> None:
        """Each job of an unknown task waits, unrun, for a worker that has its task."""
        for job_id in ids:
            job = self.app.jobs.get(job_id)
            assert job.state in (JobState.SCHEDULED, JobState.AVAILABLE), (job.state, job.errors)
            assert job.attempt == 0 and job.lost == 0, job
            (error,) = job.errors
            assert error.kind is ErrorKind.UNRUNNABLE, error
            assert error.type == "UnknownTaskError", error
            assert f"no task named {job.task!r}" in error.message, error.message
        assert self.ran == [], "a job of an unknown task ran"


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    app = App(store_url)
    app.backend.migrate()
    ran: list[Any] = []

    @app.task(max_attempts=5)
    def probe(token: str) -> None:
        ran.append(token)

    @app.task
    def good(i: int) -> int:
        return i

    try:
        yield Store(store_url, app, ran, tmp_path / "pwned")
    finally:
        app.close()


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _would_run(app: App, task: str | bytes, payload: bytes) -> bool:
    """Whether a job is valid after all (hypothesis may build one): such jobs are left out."""
    if not isinstance(task, str) or task not in app.tasks:
        return False
    try:
        args, kwargs = decode_payload(payload)
        app.tasks[task].bind(args, kwargs)
    except (SerializationError, InvalidArgumentsError):
        return False
    return True


def _waits_for_its_task(app: App, task: str | bytes, payload: bytes) -> bool:
    """Whether a job is of a task `app` does not have, with a payload that decodes."""
    if not isinstance(task, str) or task in app.tasks:
        return False
    try:
        decode_payload(payload)
    except SerializationError:
        return False
    return True


def _enqueue_good(store: Store, n: int = 3) -> list[int]:
    return [h.id for h in store.app.tasks["good"].enqueue_many([(i,) for i in range(n)])]


def _assert_good_succeeded(store: Store, ids: list[int]) -> None:
    for i, job_id in enumerate(ids):
        job = store.app.jobs.get(job_id)
        assert job.state is JobState.SUCCEEDED, (job.state, job.errors)
        assert job.result == i


class _Exploit:
    """Unpickling this creates the file at `path`: proof that a pickle payload was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# -- strategies: payloads and task names a worker must refuse ------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def _payload(args: bytes) -> bytes:
    return b'{"args":[' + args + b'],"kwargs":{}}'


truncated = st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n])
invalid_utf8 = st.tuples(
    st.binary(max_size=16),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]),
    st.binary(max_size=16),
).map(lambda parts: _payload(b'"' + b"".join(parts) + b'"'))
not_finite = st.sampled_from(
    [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"nan", b"inf"]
).map(_payload)
missing_fields = st.sampled_from(
    [
        b"{}",
        b'{"args":["ok"]}',
        b'{"kwargs":{"token":"ok"}}',
        b'{"args":{"token":"ok"},"kwargs":{}}',
        b'{"args":["ok"],"kwargs":["ok"]}',
        b'{"args":"ok","kwargs":{}}',
        b'{"args":null,"kwargs":null}',
        b'[["ok"],{}]',
        b"null",
        b'"ok"',
        b"1",
        b"",
        b"   ",
    ]
)
not_binding = st.tuples(
    st.lists(JSON_VALUES, max_size=3), st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)
).map(lambda ak: orjson.dumps({"args": ak[0], "kwargs": ak[1]}))
too_deep = st.integers(1025, 100_000).map(lambda depth: _payload(b"[" * depth + b"]" * depth))
pickled = st.integers(0, pickle.HIGHEST_PROTOCOL)
random_bytes = st.binary(max_size=200)


def bad_jobs(marker: Path) -> st.SearchStrategy[tuple[str | bytes, bytes]]:
    exploit = pickled.map(lambda p: pickle.dumps(_Exploit(str(marker)), protocol=p))
    for_probe = st.one_of(
        truncated, invalid_utf8, not_finite, missing_fields, not_binding, too_deep, exploit
    )
    unknown_task = st.text(max_size=30).filter(
        lambda t: t not in ("probe", "good") and "\x00" not in t  # PostgreSQL refuses NUL
    )
    return st.one_of(
        st.tuples(st.just("probe"), for_probe | random_bytes),
        st.tuples(unknown_task, st.just(VALID) | for_probe),
        st.tuples(st.just("good"), random_bytes),
    )


def test_the_pickle_exploit_is_live(tmp_path: Path) -> None:
    """The payload the fuzz stores really would run code if anything unpickled it."""
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_Exploit(str(marker))))
    assert marker.exists()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_bad_jobs_are_dead_lettered_once_unrun_and_good_jobs_flow(
    store: Store, data: st.DataObject
) -> None:
    jobs = data.draw(st.lists(bad_jobs(store.marker), min_size=1, max_size=5), label="bad jobs")
    good = _enqueue_good(store, 2)
    bad: list[int] = []
    waiting: list[int] = []
    for task, payload in jobs:
        if _would_run(store.app, task, payload):
            continue
        job_id = store.write(task, payload)
        if job_id is not None:
            (waiting if _waits_for_its_task(store.app, task, payload) else bad).append(job_id)
    store.drain()
    store.assert_dead_unrun(bad)
    store.assert_handed_back_unrun(waiting)
    _assert_good_succeeded(store, good)


@pytest.mark.parametrize(
    ("task", "payload", "reason"),
    [
        ("probe", VALID[:-1], "not valid JSON"),
        ("probe", _payload(b'"\xff\xfe"'), "UTF-8"),
        ("probe", _payload(b"NaN"), "not valid JSON"),
        ("probe", _payload(b"Infinity"), "not valid JSON"),
        ("probe", _payload(b"1e400"), "not valid JSON"),
        ("probe", _payload(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
        ("probe", b'{"args":["ok"]}', "must be a JSON object"),
        ("probe", b'{"kwargs":{"token":"ok"}}', "must be a JSON object"),
        ("probe", b'{"args":{"token":"ok"},"kwargs":{}}', "must be a JSON object"),
        ("probe", b'{"args":[],"kwargs":{}}', "arguments do not fit"),
        ("probe", b'{"args":["ok"],"kwargs":{"nope":1}}', "arguments do not fit"),
        ("nowhere", VALID[:-1], "not valid JSON"),
    ],
    ids=[
        "truncated",
        "invalid-utf8",
        "nan",
        "infinity",
        "overflow",
        "100k-deep",
        "no-kwargs",
        "no-args",
        "args-a-dict",
        "missing-argument",
        "unknown-keyword",
        "unknown-task-bad-payload",
    ],
)
def test_each_kind_of_bad_payload_is_dead_lettered_with_its_reason(
    store: Store, task: str, payload: bytes, reason: str
) -> None:
    good = _enqueue_good(store)
    job_id = store.write(task, payload)
    if job_id is None:  # PostgreSQL refuses to store invalid UTF-8 at all
        return
    store.drain()
    store.assert_dead_unrun([job_id], reason)
    _assert_good_succeeded(store, good)


def test_a_job_of_an_unknown_task_is_handed_back_unrun_and_good_jobs_flow(store: Store) -> None:
    good = _enqueue_good(store)
    job_id = store.write("nowhere", VALID)
    assert job_id is not None
    store.drain()
    store.assert_handed_back_unrun([job_id])
    _assert_good_succeeded(store, good)


def test_pickle_payload_is_never_unpickled(store: Store) -> None:
    ids = [
        store.write("probe", pickle.dumps(_Exploit(str(store.marker)), protocol=p))
        for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    good = _enqueue_good(store)
    store.drain()
    store.assert_dead_unrun([i for i in ids if i is not None], "not valid JSON", "UTF-8")
    _assert_good_succeeded(store, good)
    if not store.url.startswith("postgresql"):
        assert len([i for i in ids if i is not None]) == pickle.HIGHEST_PROTOCOL + 1


def test_huge_invalid_payload_is_dead_lettered_and_a_huge_valid_one_runs(store: Store) -> None:
    big = "x" * (3 * 1024 * 1024)
    invalid = store.write("probe", _payload(b'"' + big.encode()))
    valid = store.write("probe", _payload(b'"' + big.encode() + b'"'))
    good = _enqueue_good(store)
    store.drain()
    assert invalid is not None and valid is not None
    # the size limit is the producer's: a valid job written behind its back is still valid
    assert store.app.jobs.get(valid).state is JobState.SUCCEEDED
    assert store.ran == [big]
    store.ran.clear()
    store.assert_dead_unrun([invalid], "not valid JSON")
    _assert_good_succeeded(store, good)


def test_deep_but_decodable_arguments_do_not_crash_the_worker(store: Store) -> None:
    app = store.app

    @app.task(max_attempts=1)
    def echo(value: Any) -> Any:
        return value

    depth = 1000  # within the decoder's limit, beyond the encoder's
    job_id = store.write("echo", _payload(b"[" * depth + b"]" * depth))
    good = _enqueue_good(store)
    store.drain()
    assert job_id is not None
    job = app.jobs.get(job_id)
    assert job.state is JobState.DEAD and job.attempt == 1
    assert "cannot be stored as JSON" in job.errors[0].message
    _assert_good_succeeded(store, good)


# -- damaged records beyond the payload ----------------------------------------------------
SQLITE_DAMAGE: list[tuple[str, dict[str, Any], str]] = [
    ("task-not-utf8", {"task": b"pro\xffbe"}, "task is not valid UTF-8"),
    ("task-a-blob", {"task": AsBlob(b"\xff\xfe")}, "task is not valid UTF-8"),
    ("payload-not-utf8", {"payload": b'{"args":["\xff"],"kwargs":{}}'}, "payload is not valid"),
    ("priority-text", {"priority": "high"}, "priority is not an integer"),
    ("max-attempts-text", {"max_attempts": "many"}, "max_attempts is not an integer"),
    ("max-attempts-real", {"max_attempts": 2.5}, "max_attempts is not an integer"),
    ("enqueued-at-text", {"enqueued_at": "yesterday"}, "enqueued_at is not a number"),
    ("enqueued-at-blob", {"enqueued_at": AsBlob(b"\x00")}, "enqueued_at is not a number"),
]
REDIS_DAMAGE: list[tuple[str, dict[str, Any], str]] = [
    ("no-task", {"task": None}, "task is missing"),
    ("no-payload", {"payload": None}, "payload is missing"),
    ("no-max-attempts", {"max_attempts": None}, "max_attempts is missing"),
    ("no-enqueued-at", {"enqueued_at": None}, "enqueued_at is missing"),
    ("no-state", {"state": None, "errors": "]["}, ""),
    ("task-not-utf8", {"task": b"pro\xffbe"}, "task is not valid UTF-8"),
    ("payload-not-utf8", {"payload": b'{"args":["\xff"],"kwargs":{}}'}, "payload is not valid"),
    ("priority-garbage", {"priority": "high"}, "priority is not an integer"),
    ("run-at-garbage", {"run_at": "soon"}, "run_at is not a number"),
    ("max-attempts-garbage", {"max_attempts": "many"}, "max_attempts is not an integer"),
    ("attempt-garbage", {"attempt": "third", "errors": "not json"}, ""),
]


def _damage_cases() -> list[Any]:
    cases = [pytest.param("sqlite", f, r, id=f"sqlite-{n}") for n, f, r in SQLITE_DAMAGE]
    cases += [pytest.param("redis", f, r, id=f"redis-{n}") for n, f, r in REDIS_DAMAGE]
    return cases


@pytest.mark.parametrize(("engine", "fields", "reason"), _damage_cases())
@pytest.mark.parametrize("scheduled", [False, True], ids=["available", "scheduled"])
def test_damaged_record_is_dead_lettered_and_does_not_block_fetch(
    store: Store, fields: dict[str, Any], reason: str, scheduled: bool
) -> None:
    before = _enqueue_good(store)
    job_id = store.write("probe", VALID, fields=fields, scheduled=scheduled)
    after = _enqueue_good(store)
    store.drain()
    assert job_id is not None
    if "payload" in fields or "task" in fields or reason:
        store.assert_dead_unrun([job_id], reason)
    else:  # the job itself is sound: its damaged bookkeeping must just not get in the way
        job = store.app.jobs.get(job_id)
        assert job.state in (JobState.SUCCEEDED, JobState.DEAD), job
    _assert_good_succeeded(store, before)
    _assert_good_succeeded(store, after)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_sqlite_run_at_that_is_not_a_number_never_comes_due_and_blocks_nothing(
    store: Store,
) -> None:
    job_id = store.write("probe", VALID, fields={"run_at": "soon"})
    good = _enqueue_good(store)
    store.drain()
    assert job_id is not None
    job = store.app.jobs.get(job_id)
    assert job.state is JobState.AVAILABLE and job.attempt == 0
    _assert_good_succeeded(store, good)


@pytest.mark.parametrize("engine", ["postgres"])
@pytest.mark.parametrize(
    ("task", "payload"),
    [("probe", _payload(b'"\xff"')), ("probe", _payload(b'"\x00"')), ("pro\x00be", VALID)],
    ids=["invalid-utf8", "nul-in-payload", "nul-in-task"],
)
def test_postgres_refuses_to_store_invalid_text(store: Store, task: str, payload: bytes) -> None:
    with pytest.raises(RawWriteRefused):
        write_raw_job(store.url, task, payload)


# -- the producer's size limit ---------------------------------------------------------------
@pytest.mark.parametrize("engine", ["sqlite"])
def test_payload_over_the_default_limit_is_refused_at_enqueue(store: Store) -> None:
    probe = store.app.tasks["probe"]
    with pytest.raises(PayloadTooLargeError, match="over the limit of 1048576"):
        probe.enqueue("x" * (1024 * 1024))
    assert store.app.jobs.list() == []


@pytest.mark.parametrize("engine", ["sqlite"])
def test_payload_limit_is_configurable_per_app(store_url: str) -> None:
    app = App(store_url, max_payload_bytes=100)

    @app.task
    def probe(token: str) -> None: ...

    overhead = len(b'{"args":[""],"kwargs":{}}')
    try:
        probe.enqueue("x" * (100 - overhead))  # exactly at the limit
        with pytest.raises(PayloadTooLargeError, match="101 bytes encoded, over the limit of 100"):
            probe.enqueue("x" * (101 - overhead))
        assert len(app.jobs.list()) == 1
    finally:
        app.close()


# -- a real worker process never exits ----------------------------------------------------------
PROCESS_APP = """
import os
from pathlib import Path
from stagecrew import App

app = App()

@app.task(max_attempts=5)
def probe(token: str) -> None:
    Path(os.environ["RAN_MARKER"]).write_text(token)

@app.task
def good(i: int) -> int:
    return i
"""


def _process_bad_jobs(engine: str, marker: Path) -> list[tuple[str | bytes, bytes, dict[str, Any]]]:
    jobs: list[tuple[str | bytes, bytes, dict[str, Any]]] = [
        ("probe", VALID[:-3], {}),
        ("probe", _payload(b"NaN"), {}),
        ("probe", _payload(b"[" * 100_000 + b"]" * 100_000), {}),
        ("probe", b"{}", {}),
        ("probe", b'{"args":[1,2,3],"kwargs":{}}', {}),
        ("nowhere", VALID, {}),
        ("probe", pickle.dumps(_Exploit(str(marker))), {}),
    ]
    if engine == "sqlite":
        jobs += [("probe", VALID, fields) for _, fields, _ in SQLITE_DAMAGE]
    elif engine == "redis":
        jobs += [("probe", VALID, fields) for _, fields, reason in REDIS_DAMAGE if reason]
    return jobs


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the worker processes and multiprocessing's helpers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
def test_worker_process_survives_every_bad_job_and_keeps_running_good_ones(
    store: Store, engine: str, tmp_path: Path
) -> None:
    ran_marker = tmp_path / "probe-ran"
    app_ref = write_app(tmp_path, "bad_input_app", PROCESS_APP)
    env = {"STAGECREW_URL": store.url, "RAN_MARKER": str(ran_marker)}
    worker = start_worker(tmp_path, app_ref, env, "--processes", "1", "--concurrency", "4")
    try:
        warm_up = _enqueue_good(store, 1)
        if not wait_for(lambda: store.app.jobs.get(warm_up[0]).state.is_final, timeout=20):
            pytest.fail(f"the worker did not start: {stop(worker)[1][-3000:]}")
        processes = _descendants(worker.pid)
        assert processes, "no worker process found"
        bad: list[int] = []
        waiting: list[int] = []
        good: list[int] = []
        finished = (JobState.SUCCEEDED, JobState.DEAD)

        def settled() -> bool:
            return all(store.app.jobs.get(i).state in finished for i in bad + good) and all(
                store.app.jobs.get(i).errors
                for i in waiting  # handed back at least once
            )

        for round_ in range(2):  # a second round reaches a worker that already met the first
            good += _enqueue_good(store, 5)
            for task, payload, fields in _process_bad_jobs(engine, store.marker):
                job_id = store.write(task, payload, fields=fields)
                if job_id is not None:
                    unknown = not fields and _waits_for_its_task(store.app, task, payload)
                    (waiting if unknown else bad).append(job_id)
            good += _enqueue_good(store, 5)
            assert wait_for(settled, timeout=30), f"round {round_} did not settle"
        assert _descendants(worker.pid) == processes, "a worker process exited and was restarted"
    finally:
        code, output = stop(worker)
    assert code == 0, output[-3000:]
    store.assert_dead_unrun(bad)
    store.assert_handed_back_unrun(waiting)
    assert not ran_marker.exists(), "a bad job ran"
    for job_id in good:
        assert store.app.jobs.get(job_id).state is JobState.SUCCEEDED
    for trouble in ("unexpected executor error", "claim failed", "could not write"):
        assert trouble not in output, output[-3000:]
