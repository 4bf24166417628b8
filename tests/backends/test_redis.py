"""The Redis engine: what only the Redis engine promises, beyond the conformance suite.

The conformance suite runs on Redis, in both key layouts, in test_conformance.py, through
the engine registry (`stagecrew.testing.engines`), which also makes the key prefixes used
here: it reads STAGECREW_TEST_REDIS_URL (default redis://127.0.0.1:6379/0). Every test gets key
prefixes of its own, with random names, whose keys are deleted afterwards. Without a reachable
server these tests skip, except in CI (the CI variable set), where that is a failure. Tests
that restart Redis, fill its memory or change its eviction policy start a throwaway
redis-server of their own (see test_redis_servers.py); this module never reconfigures the
shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import redis
from redis.crc import key_slot

from stagecrew import App, Retry
from stagecrew.backends import backend_from_url
from stagecrew.backends.base import Ack, AckKind, JobFilter, RescueReport, Retention
from stagecrew.backends.caps import ClaimLimits
from stagecrew.backends.redis import RedisBackend, scripts
from stagecrew.backends.redis.driver import Eval, Step
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError, ConfigurationError, EnqueueError
from stagecrew.job import EnqueuedJob, JobState, NewJob
from stagecrew.testing.engines import REDIS_SERVER, Prefixes, delete_prefix, with_query
from stagecrew.worker.runner import Worker

URL = REDIS_SERVER.url
_server_or_skip = REDIS_SERVER.require


@pytest.fixture(scope="module", autouse=True)
def _redis_server() -> None:
    _server_or_skip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prefixes() -> Iterator[Prefixes]:
    made = Prefixes(URL)
    try:
        yield made
    finally:
        made.delete()


@pytest.fixture
def make_backend(prefixes: Prefixes) -> Iterator[Callable[..., RedisBackend]]:
    made: list[RedisBackend] = []

    def make(clock: FakeClock | None = None, **params: str) -> RedisBackend:
        backend = RedisBackend(prefixes.url_for(**params), clock)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.close()


# -- Redis-specific guarantees -------------------------------------------------------------
S = JobState
PAYLOAD = '{"args":[],"kwargs":{}}'
LEASE = 30.0
HOLDING = frozenset({S.SCHEDULED, S.AVAILABLE, S.RUNNING})


def job(task: str = "t", *, key: str | None = None, **fields: Any) -> NewJob:
    payload = fields.pop("payload", PAYLOAD)
    return NewJob(task=task, payload=payload, idempotency_key=key, **fields)


def raw(backend: RedisBackend) -> redis.Redis:
    return redis.Redis.from_url(backend._settings.redis_url)


def test_a_workflow_over_two_queues_is_refused_and_writes_nothing(
    make_backend: Callable[..., RedisBackend],
) -> None:
    from stagecrew.backends.workflows import NewWorkflow

    backend = make_backend(FakeClock())
    flow = NewWorkflow(id="wf", steps=((job(queue="a"),), (job(queue="b"),)), groups=(False, False))
    with pytest.raises(ValueError, match="one queue"):
        backend.enqueue_workflow(flow)
    assert backend.list_jobs(JobFilter()) == []
    assert backend.get_workflow("wf") is None


class TestKeyLayout:
    def test_every_script_call_touches_one_cluster_slot_in_the_cluster_layout(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock(), cluster_layout="1")
        calls: list[Eval] = []
        execute = backend._driver.execute

        def spy(step: Step) -> list[Any]:
            calls.extend(c for c in step.calls if isinstance(c, Eval))
            return execute(step)

        backend._driver.execute = spy  # type: ignore[method-assign]
        exercise_every_operation(backend)
        assert {c.script.name for c in calls} == set(scripts.ALL_SCRIPTS)
        for call in calls:
            tag = call.args[0]
            assert isinstance(tag, str)
            slots = {key_slot(k.encode()) for k in call.keys} | {key_slot(f"{tag}:job:1".encode())}
            assert len(slots) == 1, (call.script.name, call.keys)

    def test_on_a_single_redis_only_the_id_counter_and_the_key_indexes_leave_the_queue_slot(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        prefix = backend.prefix
        queue = backend._keys.queue("q")
        slot = key_slot(queue.keys[0].encode())
        store_wide = {f"{{{prefix}}}:ids", f"{{{prefix}}}:idempotency", f"{{{prefix}}}:unique"}
        assert {k for k in queue.keys if key_slot(k.encode()) != slot} == store_wide

    def test_queue_names_with_braces_and_colons_get_keys_of_their_own(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        names = ["a", "a:b", "{x}", "}", "é/ü", "a b"]
        ids = {name: backend.enqueue([job(queue=name)])[0].id for name in names}
        for name, job_id in ids.items():
            [claimed] = backend.claim([name], "w", 10, LEASE)
            assert (claimed.id, claimed.queue) == (job_id, name)
            keys = backend._keys.queue(name).keys
            assert len({key_slot(k.encode()) for k in keys[:7]}) == 1
        assert {s.queue for s in backend.stats()} == set(names)


def exercise_every_operation(backend: RedisBackend) -> None:
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    [a] = backend.enqueue([job(queue="a", key="k")])
    backend.enqueue([job(queue="b"), job(queue="a", delay=5.0)])
    clock.advance(10.0)
    claimed = backend.claim(["a", "b"], "w", 10, LEASE)
    assert len(claimed) == 3
    backend.enqueue([job("capped", queue="a", concurrency_key="k"), job(queue="b")])
    capped = ClaimLimits(tasks={"capped": 1}, queues={"b": 5}, keys={"capped": 1})
    assert len(backend.claim(["a", "b"], "w", 10, LEASE, capped)) == 2
    refs = {c.id: c.ref for c in claimed}
    assert backend.heartbeat("w", list(refs.values()), LEASE).lost == frozenset()
    assert backend.store_step(refs[a.id], "step", "1")
    assert backend.read_steps(a.id).steps["step"].text == "1"
    backend.ack([Ack(refs[a.id], AckKind.DEAD_LETTER)])
    backend.requeue(JobFilter(states=frozenset({S.DEAD})))
    backend.requeue(JobFilter(ids=frozenset({a.id})))
    backend.cancel(a.id)
    clock.advance(LEASE + 1)
    backend.rescue()
    backend.release_worker("w")
    backend.purge(JobFilter(states=frozenset({S.DEAD})))
    backend.prune(Retention(succeeded=0.0, cancelled=0.0, dead=0.0))
    backend.list_jobs(JobFilter(queues=frozenset({"a"})))
    backend.pause_queue("b")
    backend.resume_queue("b")
    backend.stats()
    backend.next_run_at()
    backend.age_priorities(1.0)
    backend.get(a.id)
    exercise_schedules(backend)
    exercise_workflows(backend)
    exercise_limits(backend)
    exercise_worker_registry(backend)
    exercise_job_counts(backend)


def exercise_job_counts(backend: RedisBackend) -> None:
    from stagecrew.backends.job_counts import CountKey

    backend.add_counts({CountKey("a", "t", "succeeded"): 2})
    assert [b.n for b in backend.read_counts().buckets] == [2]
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    clock.advance(7200.0)
    assert backend.prune_counts(keep=60.0) == 1


def exercise_worker_registry(backend: RedisBackend) -> None:
    from stagecrew.backends.worker_registry import WorkerBeat, WorkerInfo

    info = WorkerInfo("h", 1, ("a",), 2, 0, "0")
    backend.record_worker(WorkerBeat("w", info, 5.0))
    assert [w.id for w in backend.list_workers().workers] == ["w"]
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    clock.advance(10.0)
    assert backend.prune_workers(keep=5.0) == 1


def exercise_limits(backend: RedisBackend) -> None:
    from stagecrew.backends.limit_states import LimitSwap

    first = LimitSwap("rate:a", None, "1", 5.0)
    assert backend.swap_limits([first, LimitSwap("rate:b", None, "1", 60.0)]).applied
    assert backend.read_limits(["rate:a"]).states["rate:a"].version == first.version
    assert [r.name for r in backend.list_limits("rate:")] == ["rate:a", "rate:b"]
    clock = backend.clock
    assert isinstance(clock, FakeClock)
    clock.advance(10.0)
    assert backend.prune_limits() == 1


def exercise_workflows(backend: RedisBackend) -> None:
    from stagecrew.backends.workflows import NewWorkflow

    flow = NewWorkflow(id="wf", steps=((job(queue="a"),), (job(queue="a"),)), groups=(False, False))
    backend.enqueue_workflow(flow)
    assert backend.get_workflow("wf") is not None
    assert backend.cancel_workflow("wf") is not None


def exercise_schedules(backend: RedisBackend) -> None:
    from stagecrew.backends.schedules import ScheduleFire, TickJob

    now = backend.clock.now()
    backend.fire_schedule(ScheduleFire("s", "a", None, now))
    tick = TickJob(now + 60, job(queue="a", key="schedule:s:1"))
    assert backend.fire_schedule(ScheduleFire("s", "a", now, now + 60, (tick,))).applied
    backend.pause_schedule("s", "a")
    backend.resume_schedule("s", "a")
    assert [r.name for r in backend.list_schedules()] == ["s"]


class TestReleaseWorker:
    @pytest.mark.parametrize(
        ("now", "worker", "max_lost"),
        [
            ("", "", "3"),
            ("", "w", "0"),
            ("", "w", "1.5"),
            ("", "w", "many"),
            ("nan", "w", "3"),
            ("inf", "w", "3"),
            ("soon", "w", "3"),
        ],
    )
    def test_the_script_refuses_a_bad_argument_before_any_write(
        self, make_backend: Callable[..., RedisBackend], now: str, worker: str, max_lost: str
    ) -> None:
        backend = make_backend(FakeClock())
        [entry] = backend.enqueue([job()])
        backend.claim(["default"], "w", 1, LEASE)
        client = raw(backend)
        key = backend._keys.queue("default").job(entry.id)
        before = client.hgetall(key)
        queue = backend._keys.queue("default")
        call = Eval.of(scripts.RELEASE_WORKER, queue, now, worker, max_lost)
        with pytest.raises(redis.ResponseError, match="stagecrew: bad"):
            backend._driver.execute(Step((call,)))
        assert client.hgetall(key) == before
        assert client.zscore(backend._keys.queue("default").keys[2], entry.id) is not None
        stored = backend.get(entry.id)
        assert stored is not None and (stored.state, stored.lost) == (S.RUNNING, 0)

    def test_it_releases_the_workers_jobs_in_every_queue(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        backend.enqueue([job(queue=q) for q in ("a", "b", "c")])
        assert len(backend.claim(["a", "b"], "dead", 10, LEASE)) == 2
        [other] = backend.claim(["c"], "alive", 10, LEASE)
        assert backend.release_worker("dead") == RescueReport(requeued=2)
        assert {j.queue for j in backend.claim(["a", "b", "c"], "w2", 10, LEASE)} == {"a", "b"}
        assert backend.heartbeat("alive", [other.ref], LEASE).lost == frozenset()


class TestEnqueue:
    def test_a_batch_over_several_queues_gets_ids_in_input_order(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        entries = backend.enqueue([job("1", queue="a"), job("2", queue="b"), job("3", queue="a")])
        ids = [e.id for e in entries]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert [(j.task, j.queue) for j in map(backend.get, ids) if j] == [
            ("1", "a"),
            ("2", "b"),
            ("3", "a"),
        ]

    def test_a_batch_over_several_queues_is_written_in_one_transaction(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        backend.enqueue([job(queue="a"), job(queue="b")])  # registers both queues
        steps: list[Step] = []
        execute = backend._driver.execute

        def spy(step: Step) -> list[Any]:
            steps.append(step)
            return execute(step)

        backend._driver.execute = spy  # type: ignore[method-assign]
        backend.enqueue([job(queue="a"), job(queue="b"), job(queue="c")])
        writes = [s for s in steps if any(isinstance(c, Eval) for c in s.calls)]
        assert len(writes) == 1
        assert writes[0].atomic and len(writes[0].calls) == 3

    def test_an_idempotency_key_dedupes_across_queues_on_a_single_redis(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        [first] = backend.enqueue([job(queue="a", key="k")])
        [again] = backend.enqueue([job(queue="b", key="k")])
        assert (again.id, again.created) == (first.id, False)
        mixed = backend.enqueue([job(queue="c", key="m"), job(queue="d", key="m")])
        assert [e.created for e in mixed] == [True, False]
        assert mixed[1].id == mixed[0].id
        assert backend.get(mixed[0].id).queue == "c"  # type: ignore[union-attr]

    def test_an_index_entry_names_its_jobs_queue_and_an_older_entry_its_own_queue(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        prefix, r = backend.prefix, raw(backend)
        live = frozenset({S.SCHEDULED, S.AVAILABLE, S.RUNNING})
        [keyed] = backend.enqueue([job(queue="a", key="k", unique_key="u", unique_states=live)])
        tag = backend._keys.queue("a").tag
        assert r.hget(f"{{{prefix}}}:idempotency", "k") == f"{keyed.id} {tag}".encode()
        assert r.hget(f"{{{prefix}}}:unique", "u") == f"{keyed.id} {tag}".encode()
        # entries written before the tag was kept hold the id alone: a job of the same queue
        r.hset(f"{{{prefix}}}:idempotency", "k", str(keyed.id))
        r.hset(f"{{{prefix}}}:unique", "u", str(keyed.id))
        assert backend.enqueue([job(queue="a", key="k")])[0] == EnqueuedJob(keyed.id, False)
        again = backend.enqueue([job(queue="a", unique_key="u", unique_states=live)])
        assert again == [EnqueuedJob(keyed.id, False)]
        backend.cancel(keyed.id)
        assert backend.purge(JobFilter(ids=frozenset({keyed.id}))) == 1
        assert r.hlen(f"{{{prefix}}}:idempotency") == r.hlen(f"{{{prefix}}}:unique") == 0

    def test_the_cluster_layout_dedupes_idempotency_keys_within_a_queue(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock(), cluster_layout="1")
        [first] = backend.enqueue([job(queue="a", key="k")])
        assert backend.enqueue([job(queue="a", key="k")])[0] == EnqueuedJob(first.id, False)
        assert backend.enqueue([job(queue="b", key="k")])[0].created is True
        in_one_batch = backend.enqueue(
            [job(queue="c", key="j"), job(queue="d", key="j"), job(queue="c", key="j")]
        )
        assert [e.created for e in in_one_batch] == [True, True, False]
        assert in_one_batch[2].id == in_one_batch[0].id != in_one_batch[1].id
        single = make_backend(FakeClock())  # one store-wide index: one job per key
        assert [
            e.created for e in single.enqueue([job(queue="c", key="j"), job(queue="d", key="j")])
        ] == [True, False]

    @pytest.mark.parametrize(
        ("batch", "width"),
        [
            ([job(), job()], 9),
            ([job(concurrency_key="c"), job()], 10),
            ([job(key="k"), job()], 13),
            ([job(unique_key="u", unique_states=HOLDING), job(concurrency_key="c")], 13),
        ],
        ids=["plain", "concurrency-keys", "idempotency-keys", "unique-and-concurrency-keys"],
    )
    def test_a_batch_sends_the_fewest_fields_per_job_its_keys_need(
        self, make_backend: Callable[..., RedisBackend], batch: list[NewJob], width: int
    ) -> None:
        backend = make_backend(FakeClock())
        calls = spy_on_scripts(backend)
        entries = backend.enqueue(batch)
        call = [c for c in calls if c.script.name == scripts.ENQUEUE][-1]  # after registering
        assert call.args[5] == width
        assert len(call.args) == 6 + width * len(batch)
        for new, entry in zip(batch, entries, strict=True):
            stored = backend.get(entry.id)
            assert stored is not None
            assert (stored.concurrency_key, stored.unique_key) == (
                new.concurrency_key,
                new.unique_key,
            )

    def test_payloads_and_results_keep_every_character(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        payload = '{"args":["\\u0000 nul, é, 😀, \\"quotes\\", \\\\ and ]"],"kwargs":{}}'
        [entry] = backend.enqueue([job(payload=payload, key="ключ 😀")])
        [claimed] = backend.claim(["default"], "w", 1, LEASE)
        assert claimed.payload == payload
        result = '"\\u0000 and 😀"'
        assert backend.ack([Ack(claimed.ref, AckKind.COMPLETE, result=result)]) == [True]
        stored = backend.get(entry.id)
        assert stored is not None
        assert (stored.payload, stored.result_json, stored.idempotency_key) == (
            payload,
            result,
            "ключ 😀",
        )

    def test_the_job_hash_names_no_queue_it_does_not_need(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        [entry] = backend.enqueue([job(queue="q")])
        stored = raw(backend).hgetall(backend._keys.queue("q").job(entry.id))
        assert b"queue" not in stored
        assert stored[b"state"] == b"available"


class TestScriptsCheckEveryInputBeforeTheirFirstWrite:
    """Redis does not roll back a script that fails half-way: a bad argument must change nothing.

    The scripts are called directly, as a buggy or foreign client could, with the arguments
    the backend would send except for the one that is wrong.
    """

    @staticmethod
    def call(backend: RedisBackend, name: str, *args: str | int) -> Any:
        queue = backend._keys.queue("default")
        text = scripts.script(name).text
        return raw(backend).eval(text, len(queue.keys), *queue.keys, queue.tag, *args)

    @staticmethod
    def snapshot(backend: RedisBackend) -> dict[bytes, Any]:
        client = raw(backend)
        keys = sorted(client.scan_iter(match=f"{{{backend._keys.prefix}*"))
        dump: dict[bytes, Any] = {}
        for key in keys:
            kind = client.type(key)
            if kind == b"hash":
                dump[key] = client.hgetall(key)
            elif kind == b"zset":
                dump[key] = client.zrange(key, 0, -1, withscores=True)
            else:
                dump[key] = client.dump(key)
        return dump

    @pytest.mark.parametrize(
        ("now", "worker", "limit", "lease"),
        [
            ("", "w", "1", "nan"),
            ("", "w", "1", "inf"),
            ("", "w", "1", "-5"),
            ("nan", "w", "1", "30"),
            ("", "w", "1.5", "30"),
            ("", "", "1", "30"),
        ],
    )
    def test_a_claim_with_a_bad_input_is_refused_and_leaves_the_job_claimable(
        self,
        make_backend: Callable[..., RedisBackend],
        now: str,
        worker: str,
        limit: str,
        lease: str,
    ) -> None:
        backend = make_backend()
        backend.enqueue([job(), job()])
        [retried] = backend.claim(["default"], "w", 1, LEASE)
        assert backend.ack([Ack(retried.ref, AckKind.RETRY, delay=0.0)]) == [True]  # due again
        before = self.snapshot(backend)
        with pytest.raises(redis.ResponseError, match="stagecrew: bad"):
            self.call(backend, scripts.CLAIM, now, worker, limit, lease, "10")
        assert self.snapshot(backend) == before
        assert len(backend.claim(["default"], "w", 10, LEASE)) == 2

    @pytest.mark.parametrize(
        "bad",
        [
            ("kind", "explode"),
            ("target", "running"),
            ("target", ""),
            ("target", "succeeded"),
            ("target", "available"),
            ("delay", "nan"),
            ("delay", "-1"),
            ("token", "1.0"),
            ("token", "x"),
            ("id", "1:other"),
            ("error", "not json"),
        ],
    )
    def test_an_ack_batch_with_one_bad_outcome_is_refused_whole(
        self, make_backend: Callable[..., RedisBackend], bad: tuple[str, str]
    ) -> None:
        backend = make_backend()
        backend.enqueue([job(), job()])
        first, second = backend.claim(["default"], "w", 2, LEASE)
        good = [first.id, first.token, "complete", "succeeded", "1", "", ""]
        wrong: list[str | int] = [second.id, second.token, "retry", "scheduled", "", "", "5"]
        field, value = bad
        wrong[{"id": 0, "token": 1, "kind": 2, "target": 3, "error": 5, "delay": 6}[field]] = value
        before = self.snapshot(backend)
        with pytest.raises(redis.ResponseError, match="stagecrew: bad"):
            self.call(backend, scripts.ACK, "", *good, *wrong)
        assert self.snapshot(backend) == before
        assert backend.ack([Ack(first.ref, AckKind.COMPLETE, result="1")]) == [True]

    @pytest.mark.parametrize(
        ("lease", "pair"),
        [("nan", None), ("inf", None), ("30", ("id", "x")), ("30", ("token", "2.5"))],
    )
    def test_a_heartbeat_with_a_bad_input_is_refused_and_extends_nothing(
        self,
        make_backend: Callable[..., RedisBackend],
        lease: str,
        pair: tuple[str, str] | None,
    ) -> None:
        backend = make_backend()
        backend.enqueue([job(), job()])
        first, second = backend.claim(["default"], "w", 2, LEASE)
        refs: list[str | int] = [first.id, first.token, second.id, second.token]
        if pair is not None:
            refs[{"id": 2, "token": 3}[pair[0]]] = pair[1]
        before = self.snapshot(backend)
        with pytest.raises(redis.ResponseError, match="stagecrew: bad"):
            self.call(backend, scripts.HEARTBEAT, "", "w", lease, *refs)
        assert self.snapshot(backend) == before


class TestServerClock:
    def test_without_a_fake_clock_the_redis_server_decides_the_time(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        class Stopped:
            """A clock stuck in 1970: the engine must not read it."""

            def now(self) -> float:
                return 0.0

        backend = make_backend()
        backend.clock = Stopped()
        server_now = float(".".join(str(p) for p in raw(backend).time()))
        [entry] = backend.enqueue([job(delay=0.3)])
        stored = backend.get(entry.id)
        assert stored is not None and stored.state is S.SCHEDULED
        assert abs(stored.enqueued_at - server_now) < 5.0
        assert backend.claim(["default"], "w", 1, LEASE) == []
        time.sleep(0.35)
        [claimed] = backend.claim(["default"], "w", 1, LEASE)
        assert claimed.lease_expires_at == pytest.approx(claimed.started_at + LEASE)

    def test_a_retry_is_due_at_the_servers_now_plus_its_delay_whatever_the_workers_clock(
        self, prefixes: Prefixes
    ) -> None:
        class HourFast:
            """A worker clock an hour fast: not a FakeClock, so the server's clock must win."""

            def now(self) -> float:
                return time.time() + 3600.0

        app = App(prefixes.url_for(), clock=HourFast())

        @app.task(name="flaky")
        def flaky() -> None:
            raise Retry(in_=60.0)

        handle = flaky.enqueue()
        server = redis.Redis.from_url(URL)

        def server_now() -> float:
            seconds, micros = server.time()
            return seconds + micros / 1e6

        before = server_now()
        try:
            assert asyncio.run(Worker(app, concurrency=1).drain()) == 1
            after = server_now()
            stored = app.jobs.get(handle.id)
        finally:
            app.close()
            server.close()
        assert stored is not None
        assert (stored.state, stored.attempt) == (S.SCHEDULED, 1)
        # not an hour late: the worker sends the delay and Redis adds it to its own TIME
        assert before + 60.0 - 0.01 <= stored.run_at <= after + 60.0 + 0.01


class TestFindingJobs:
    def test_a_backend_that_never_saw_a_job_finds_it_by_id(
        self, make_backend: Callable[..., RedisBackend], prefixes: Prefixes
    ) -> None:
        clock = FakeClock()
        producer = make_backend(clock)
        [entry] = producer.enqueue([job(queue="elsewhere")])
        worker = RedisBackend(with_query(URL, prefix=producer.prefix), clock)
        other = RedisBackend(with_query(URL, prefix=producer.prefix), clock)
        try:
            [claimed] = worker.claim(["elsewhere"], "w", 1, LEASE)
            assert other.get(entry.id) is not None
            assert other.heartbeat("w", [claimed.ref], LEASE).lost == frozenset()
            job_after = other.cancel(entry.id)
            assert job_after is not None and job_after.cancel_requested
            assert other.ack([Ack(claimed.ref, AckKind.CANCEL)]) == [True]
            assert other.get(entry.id).state is S.CANCELLED  # type: ignore[union-attr]
        finally:
            worker.close()
            other.close()

    def test_a_remembered_queue_that_no_longer_holds_the_job_is_looked_up_again(
        self, make_backend: Callable[..., RedisBackend], prefixes: Prefixes
    ) -> None:
        clock = FakeClock()
        old = make_backend(clock)
        [first] = old.enqueue([job(queue="a")])
        delete_prefix(URL, old.prefix)  # the store lost its data (a restart without persistence)
        fresh = RedisBackend(with_query(URL, prefix=old.prefix), clock)
        try:
            [again] = fresh.enqueue([job("new", queue="b")])
            assert again.id == first.id  # the counter started over
            found = old.get(first.id)
            assert found is not None and (found.task, found.queue) == ("new", "b")
            [claimed] = fresh.claim(["b"], "w", 1, LEASE)
            old._locator.remember(first.id, "a")  # as remembered before the data was lost
            assert old.heartbeat("w", [claimed.ref], LEASE).lost == frozenset()
            old._locator.remember(first.id, "a")
            assert old.ack([Ack(claimed.ref, AckKind.COMPLETE, result="1")]) == [True]
            old._locator.remember(first.id, "a")
            assert old.cancel(first.id).state is S.SUCCEEDED  # type: ignore[union-attr]
        finally:
            fresh.close()


class TestFetch:
    def test_fetch_over_several_queues_claims_by_priority_across_them(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        clock = FakeClock()
        backend = make_backend(clock)
        slow = backend.enqueue([job(queue="a", priority=5) for _ in range(3)])
        urgent = backend.enqueue([job(queue="b", priority=-1) for _ in range(2)])
        due_later = backend.enqueue([job(queue="c", priority=-9, delay=10.0)])
        claimed = backend.claim(["a", "b", "c"], "w", 3, LEASE)
        assert [c.id for c in claimed] == [e.id for e in urgent] + [slow[0].id]
        clock.advance(10.0)
        [next_one] = backend.claim(["a", "b", "c"], "w", 1, LEASE)
        assert next_one.id == due_later[0].id

    def test_a_due_scheduled_job_stays_scheduled_until_it_is_claimed(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        clock = FakeClock()
        backend = make_backend(clock)
        first, second, third = backend.enqueue([job(delay=10.0) for _ in range(3)])
        clock.advance(20.0)
        [claimed] = backend.claim(["default"], "w", 1, LEASE)  # moves all three to T:due
        assert claimed.id == first.id
        assert backend.get(second.id).state is S.SCHEDULED  # type: ignore[union-attr]
        due_key = backend._keys.queue("default").keys[9]
        assert raw(backend).zcard(due_key) == 2
        stats = {s.queue: s for s in backend.stats()}["default"]
        assert stats.counts == {S.RUNNING: 1, S.SCHEDULED: 2}
        assert stats.oldest_available_age == pytest.approx(10.0)
        listed = backend.list_jobs(JobFilter(states=frozenset({S.SCHEDULED})))
        assert [j.id for j in listed] == [third.id, second.id]
        assert backend.cancel(second.id).state is S.CANCELLED  # type: ignore[union-attr]
        assert raw(backend).zcard(due_key) == 1
        assert backend.next_run_at() == pytest.approx(clock.now() - 10.0)
        [last] = backend.claim(["default"], "w", 5, LEASE)
        assert last.id == third.id

    def test_many_jobs_claimed_rescued_and_requeued_in_batches(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        clock = FakeClock()
        backend = make_backend(clock)
        n = 2500
        backend.enqueue([job("even" if i % 2 == 0 else "odd", max_attempts=1) for i in range(n)])
        assert len(backend.claim(["default"], "w", n, LEASE)) == n
        clock.advance(LEASE + 1)
        assert backend.rescue() == RescueReport(dead=n)
        requeued = backend.requeue(JobFilter(tasks=frozenset({"odd"})))
        assert requeued == n // 2
        counts = {s.queue: s.counts for s in backend.stats()}["default"]
        assert counts == {S.AVAILABLE: n // 2, S.DEAD: n // 2}
        assert backend.purge(JobFilter(states=frozenset({S.DEAD}))) == n // 2
        listed = backend.list_jobs(JobFilter(states=frozenset({S.AVAILABLE})))
        assert len(listed) == n // 2
        assert [j.id for j in listed] == sorted((j.id for j in listed), reverse=True)
        assert {j.task for j in listed} == {"odd"}


def spy_on_scripts(backend: RedisBackend) -> list[Eval]:
    """The script calls `backend` sends from now on, in order."""
    calls: list[Eval] = []
    execute = backend._driver.execute

    def spy(step: Step) -> list[Any]:
        calls.extend(c for c in step.calls if isinstance(c, Eval))
        return execute(step)

    backend._driver.execute = spy  # type: ignore[method-assign]
    return calls


class TestConcurrencyCaps:
    @pytest.mark.parametrize(
        "limits",
        [None, ClaimLimits(queues={"elsewhere": 1})],
        ids=["no-limits", "only-other-queues-capped"],
    )
    def test_a_claim_without_caps_sends_the_plain_claim(
        self, make_backend: Callable[..., RedisBackend], limits: ClaimLimits | None
    ) -> None:
        backend = make_backend(FakeClock())
        backend.enqueue([job(concurrency_key="k"), job()])
        calls = spy_on_scripts(backend)
        assert len(backend.claim(["default"], "w", 10, LEASE, limits)) == 2
        [call] = calls
        assert call.script.name == scripts.CLAIM
        assert call.args[2:] == ("w", 10, repr(LEASE), 1000)

    def test_a_capped_claim_over_several_queues_is_one_script_call(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        backend.enqueue([job(queue="a"), job(queue="b"), job("u", queue="b")])
        calls = spy_on_scripts(backend)
        claimed = backend.claim(["a", "b"], "w", 10, LEASE, ClaimLimits(tasks={"t": 1}))
        assert [c.queue for c in claimed] == ["a", "b"]
        assert [c.script.name for c in calls] == [scripts.CLAIM_CAPPED]

    def test_caps_count_the_running_jobs_of_queues_with_any_name(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        """The script names other queues' keys itself: its encoding must be keys.py's."""
        backend = make_backend(FakeClock())
        names = ["é/ü", "a b", "{x}", "a:b", "100%", "~ok_.-"]
        for name in names:
            backend.enqueue([job(queue=name, concurrency_key="shared")])
            assert len(backend.claim([name], "w", 1, LEASE)) == 1
        backend.enqueue([job(), job(concurrency_key="shared")])
        tasks = ClaimLimits(tasks={"t": len(names)})
        keys = ClaimLimits(keys={"t": len(names)})
        assert backend.claim(["default"], "w", 10, LEASE, tasks) == []
        [free] = backend.claim(["default"], "w", 10, LEASE, keys)
        assert backend.get(free.id).concurrency_key is None  # type: ignore[union-attr]

    def test_the_cluster_layout_counts_caps_within_each_queue(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        """The documented limit (keys.py): each script touches one queue's slot."""
        backend = make_backend(FakeClock(), cluster_layout="1")
        backend.enqueue([job(queue="a"), job(queue="a"), job(queue="b", priority=-1)])
        limits = ClaimLimits(tasks={"t": 1})
        assert len(backend.claim(["a"], "w", 10, LEASE, limits)) == 1
        [other] = backend.claim(["a", "b"], "w", 10, LEASE, limits)
        assert other.queue == "b"
        assert backend.claim(["a", "b"], "w", 10, LEASE, limits) == []

    def test_the_cluster_layout_claims_queues_in_head_order_up_to_the_limit(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock(), cluster_layout="1")
        backend.enqueue([job(queue="a", priority=5), job(queue="a", priority=5), job(queue="b")])
        limits = ClaimLimits(tasks={"t": 5})
        claimed = backend.claim(["a", "b"], "w", 2, LEASE, limits)
        assert [c.queue for c in claimed] == ["b", "a"]
        [last] = backend.claim(["a", "b"], "w", 2, LEASE, limits)
        assert last.queue == "a"

    def test_a_capped_claim_examines_at_most_its_walk_bound(
        self, make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The residual (docs/redis.md): a job behind more passed-over jobs than the bound
        waits until enough of them are claimed."""
        monkeypatch.setattr("stagecrew.backends.redis.backend.CAPPED_WALK", 3)
        backend = make_backend(FakeClock())
        capped = backend.enqueue([job("t", priority=0) for _ in range(5)])
        [behind] = backend.enqueue([job("u", priority=1)])
        limits = ClaimLimits(tasks={"t": 1})
        [running] = backend.claim(["default"], "w", 10, LEASE, limits)
        assert running.id == capped[0].id
        assert backend.claim(["default"], "w", 10, LEASE, limits) == []  # 3 examined, all full
        assert backend.get(behind.id).state is S.AVAILABLE  # type: ignore[union-attr]
        for waiting in capped[1:3]:
            assert backend.ack([Ack.complete(running.ref)]) == [True]
            [running] = backend.claim(["default"], "w", 10, LEASE, limits)
            assert running.id == waiting.id
        assert backend.ack([Ack.complete(running.ref)]) == [True]
        claimed = backend.claim(["default"], "w", 10, LEASE, limits)
        assert sorted(c.id for c in claimed) == [capped[3].id, behind.id]

    def test_a_job_written_without_a_concurrency_key_field_is_capped_by_task(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        """Jobs stored before concurrency keys existed have no such field: no key."""
        backend = make_backend(FakeClock())
        [old, _] = backend.enqueue([job(concurrency_key="k"), job(concurrency_key="k")])
        raw(backend).hdel(backend._keys.queue("default").job(old.id), "concurrency_key")
        assert backend.get(old.id).concurrency_key is None  # type: ignore[union-attr]
        assert len(backend.claim(["default"], "w", 10, LEASE, ClaimLimits(keys={"t": 1}))) == 2


class TestListing:
    def test_listing_merges_queues_newest_first_across_pages(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        ids: list[int] = []
        for i in range(6):
            queue = "a" if i % 3 else "b"
            ids += [e.id for e in backend.enqueue([job(queue=queue) for _ in range(400)])]
        listed = backend.list_jobs(JobFilter())
        assert [j.id for j in listed] == sorted(ids, reverse=True)
        page = backend.list_jobs(JobFilter(limit=700, before_id=ids[1000]))
        assert [j.id for j in page] == sorted((i for i in ids if i < ids[1000]), reverse=True)[:700]
        few = backend.list_jobs(JobFilter(queues=frozenset({"b"}), limit=3))
        assert [j.queue for j in few] == ["b"] * 3


class TestWait:
    def test_wait_wakes_on_work_in_its_own_queues_only(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())

        async def scenario() -> tuple[float, float]:
            await backend.wait(["a"], 0.5)  # nothing waits: returns after its timeout
            waiter = asyncio.create_task(backend.wait(["a"], 0.5))
            await asyncio.sleep(0.05)
            await asyncio.to_thread(backend.enqueue, [job(queue="b")])
            started = time.monotonic()
            await waiter
            other = time.monotonic() - started
            waiter = asyncio.create_task(backend.wait(["a"], 5.0))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await asyncio.to_thread(backend.enqueue, [job(queue="a")])
            await waiter
            return other, time.monotonic() - started

        other, own = asyncio.run(scenario())
        assert other > 0.3
        assert own < 1.0

    def test_a_wakeup_published_while_nobody_waits_is_not_lost(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())

        async def scenario() -> float:
            await backend.wait(["default"], 0.5)  # connects
            await asyncio.to_thread(backend.enqueue, [job()])  # while busy, not waiting
            started = time.monotonic()
            await backend.wait(["default"], 5.0)
            return time.monotonic() - started

        assert asyncio.run(scenario()) < 1.0

    def test_delayed_work_does_not_wake_waiters(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())

        async def scenario() -> float:
            await backend.wait(["default"], 0.5)
            started = time.monotonic()
            waiter = asyncio.create_task(backend.wait(["default"], 0.4))
            await asyncio.to_thread(backend.enqueue, [job(delay=60.0)])
            await waiter
            return time.monotonic() - started

        assert asyncio.run(scenario()) > 0.3

    def test_wait_and_claim_claims_in_the_round_trip_that_wakes_it(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        """The blocking pop and the claim go out in one pipeline: nothing more is sent."""
        backend = make_backend(FakeClock())

        async def scenario() -> tuple[list[list[str]], int]:
            wire: Any = (await backend._side()).wire
            sent: list[list[str]] = []
            call, pipeline, call_blocking = wire.call, wire.pipeline, wire.call_blocking

            async def counted_call(command: Any) -> Any:
                sent.append([str(command[0])])
                return await call(command)

            async def counted_pipeline(commands: Any) -> Any:
                sent.append([str(c[0]) for c in commands])
                return await pipeline(commands)

            async def counted_blocking(commands: Any, timeout: float) -> Any:
                sent.append([str(c[0]) for c in commands])
                return await call_blocking(commands, timeout)

            wire.call, wire.pipeline = counted_call, counted_pipeline
            wire.call_blocking = counted_blocking
            waiter = asyncio.create_task(backend.wait_and_claim(["default"], "w", 10, LEASE, 5.0))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(backend.enqueue, [job()])  # on the synchronous wire
            return sent, len(await waiter)

        sent, claimed = asyncio.run(scenario())
        assert claimed == 1
        assert sent == [["BLPOP", "EVALSHA"]]

    def test_a_wait_and_claim_cancelled_after_its_claim_ran_hands_the_jobs_back(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        """Over several queues the claim is a step after the wake-up: a stop that comes while
        its reply is on the way must not leave the jobs claimed by nobody until their lease."""
        backend = make_backend(FakeClock())

        async def scenario() -> list[S]:
            wire: Any = (await backend._side()).wire
            call = wire.call
            claimed = asyncio.Event()
            reply_arrives = asyncio.Event()

            async def slow_reply(command: Any) -> Any:  # the claim step: one script call
                reply = await call(command)  # the store has claimed
                claimed.set()
                await reply_arrives.wait()
                return reply

            [entry] = await backend.enqueue_async([job(queue="b")])
            wire.call = slow_reply
            waiter = asyncio.create_task(backend.wait_and_claim(["a", "b"], "w", 10, LEASE, 5.0))
            await asyncio.wait_for(claimed.wait(), 5)
            waiter.cancel()
            await asyncio.sleep(0)
            reply_arrives.set()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            wire.call = call
            found = await backend.get_async(entry.id)
            assert found is not None
            return [found.state]

        assert asyncio.run(scenario()) == [S.AVAILABLE]

    def test_concurrent_waits_on_one_loop_take_turns_without_errors(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())

        async def scenario() -> float:
            await backend.wait(["default"], 0.5)
            started = time.monotonic()
            waiters = [asyncio.create_task(backend.wait(["default"], 0.3)) for _ in range(3)]
            await asyncio.sleep(0.05)
            await asyncio.to_thread(backend.enqueue, [job()])
            await asyncio.gather(*waiters)
            return time.monotonic() - started

        assert asyncio.run(scenario()) < 2.0

    def test_the_async_operations_run_on_redis_asyncio_not_on_a_thread(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        clock = FakeClock()
        backend = make_backend(clock)

        def synchronous(op: object) -> NoReturn:
            raise AssertionError("an asynchronous operation ran on the synchronous driver")

        backend._drive = synchronous  # type: ignore[assignment]

        async def scenario() -> None:
            [entry] = await backend.enqueue_async([job()])
            [claimed] = await backend.claim_async(["default"], "w", 1, LEASE)
            await backend.heartbeat_async("w", [claimed.ref], LEASE)
            assert await backend.ack_async([Ack(claimed.ref, AckKind.COMPLETE)]) == [True]
            assert (await backend.get_async(entry.id)).state is S.SUCCEEDED  # type: ignore[union-attr]
            assert await backend.next_run_at_async() is None
            assert await backend.rescue_async() == RescueReport()
            clock.advance(8 * 86_400.0)
            assert await backend.prune_async(Retention()) == 1

        asyncio.run(scenario())


class TestCancellation:
    def test_a_call_cancelled_at_any_moment_ends_cancelled(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        """redis-py sends each command through `asyncio.wait_for`, which on Python 3.11 drops
        a cancellation that comes as the send completes; the call must not return as if none
        had come (a task told to stop that way would carry on)."""
        backend = make_backend()

        async def scenario() -> list[int]:
            await backend.get_async(1)  # connected
            lost = []
            for steps in range(16):  # loop turns between the start of a call and its cancel
                for _ in range(5):
                    call = asyncio.create_task(backend.get_async(1))
                    for _ in range(steps):
                        await asyncio.sleep(0)
                    if not call.cancel():  # it had returned already
                        continue
                    with contextlib.suppress(asyncio.CancelledError):
                        await call
                        lost.append(steps)
            return lost

        assert asyncio.run(scenario()) == []


class TestPackaging:
    def test_the_engine_package_does_not_shadow_redis_py(self) -> None:
        import stagecrew.backends.redis.driver as engine

        assert engine.redis.__name__ == "redis"
        assert "site-packages" in (engine.redis.__file__ or "")
        assert hasattr(engine.redis, "Redis")

    def test_every_script_is_packaged_with_a_header_naming_keys_and_arguments(self) -> None:
        for name in scripts.ALL_SCRIPTS:
            script = scripts.script(name)
            assert script.text.startswith("#!lua")
            body = script.text.split("local TAG = ARGV[1]", 1)[1]
            assert "KEYS" in body and "ARGV" in body, name

    def test_a_wait_on_no_queue_just_sleeps(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock())
        started = time.monotonic()
        asyncio.run(backend.wait([], 0.1))
        assert 0.05 < time.monotonic() - started < 2.0


class TestErrors:
    def test_enqueue_to_an_unreachable_redis_fails_at_once_with_enqueue_error(self) -> None:
        backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0?prefix=nowhere")
        try:
            started = time.monotonic()
            with pytest.raises(EnqueueError, match=r"could not enqueue.*reachable"):
                backend.enqueue([job()])
            assert time.monotonic() - started < 2.0
            with pytest.raises(BackendError, match="claim failed"):
                backend.claim(["default"], "w", 1, LEASE)
            with pytest.raises(BackendError):
                asyncio.run(backend.get_async(1))
            backend.prepare()  # an unreachable store is reported by the operations, not here
        finally:
            backend.close()

    def test_the_password_never_shows_in_messages(self) -> None:
        url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
        backend = RedisBackend(url)
        try:
            with pytest.raises(EnqueueError) as raised:
                backend.enqueue([job()])
            assert "s3cret" not in str(raised.value)
            assert "s3cret" not in repr(backend)
        finally:
            backend.close()

    @pytest.mark.parametrize("prefix", ["", "a{b", "c}"])
    def test_a_prefix_with_braces_is_refused(self, prefix: str) -> None:
        with pytest.raises(ConfigurationError, match="prefix"):
            RedisBackend(f"{URL}?prefix={prefix}")

    def test_redis_py_options_in_the_url_reach_redis_py(self) -> None:
        backend = RedisBackend(f"{URL}?prefix=x&socket_timeout=7")
        try:
            assert backend._client.connection_pool.connection_kwargs["socket_timeout"] == 7.0
        finally:
            backend.close()

    def test_the_url_factory_builds_the_redis_engine(self) -> None:
        backend = backend_from_url(f"{URL}?prefix=factory")
        try:
            assert isinstance(backend, RedisBackend)
            assert backend.capabilities.server_clock and backend.capabilities.instant_wakeup
        finally:
            backend.close()


class TestPreflight:
    def test_it_warns_loudly_when_redis_persists_nothing(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend()
        client = raw(backend)
        appendonly = client.config_get("appendonly")["appendonly"]
        save = client.config_get("save")["save"]
        if appendonly != "no" or save != "":
            pytest.skip("the shared Redis persists data; see test_redis_servers.py")
        warnings = backend.preflight()
        assert any("persists NOTHING" in w for w in warnings)

    def test_prepare_records_the_key_layout_and_refuses_a_newer_one(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend()
        backend.prepare()
        client = raw(backend)
        assert client.get(backend._keys.layout) == b"1"
        client.set(backend._keys.layout, "99")
        with pytest.raises(BackendError, match="newer"):
            backend.migrate()

    def test_prepare_refuses_a_store_written_by_a_newer_stagecrew(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend()
        raw(backend).set(backend._keys.layout, "99")
        with pytest.raises(BackendError, match="upgrade stagecrew"):
            backend.prepare()


class TestIdCounter:
    def test_a_reserved_id_that_is_taken_is_refused_and_nothing_is_written(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        backend = make_backend(FakeClock(), cluster_layout="1")
        [first] = backend.enqueue([job()])
        raw(backend).set(backend._keys.ids, 0)  # as if restored from an older copy
        with pytest.raises(EnqueueError, match=r"taken already.*nothing was written"):
            backend.enqueue([job("second"), job("third")])
        assert [j.task for j in backend.list_jobs(JobFilter())] == ["t"]
        raw(backend).set(backend._keys.ids, first.id)
        assert backend.enqueue([job("later")])[0].id == first.id + 1


class TestLimitStates:
    @pytest.mark.parametrize("version", [2**53 + 1, 2**62 + 1, 2**63 - 1])
    def test_a_version_past_a_lua_numbers_exact_integers_is_kept_and_compared_exactly(
        self, make_backend: Callable[..., RedisBackend], version: int
    ) -> None:
        from stagecrew.backends.limit_states import LimitSwap

        backend = make_backend(FakeClock())
        backend.swap_limits([LimitSwap("rate:a", None, "1", 60.0, version=version)])
        assert backend.read_limits(["rate:a"]).states["rate:a"].version == version
        near = LimitSwap("rate:a", version - 1, "2", 60.0)  # the same double in Lua
        assert not backend.swap_limits([near]).applied
        assert backend.swap_limits([LimitSwap("rate:a", version, "3", 60.0)]).applied

    def test_the_records_and_their_expiry_index_share_the_stores_slot(
        self, make_backend: Callable[..., RedisBackend]
    ) -> None:
        keys = make_backend()._keys
        slots = {key_slot(k.encode()) for k in (keys.limits, keys.limits_expiry, keys.layout)}
        assert len(slots) == 1

    def test_a_listing_over_many_hscan_pages_keeps_each_record_once(
        self, make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from stagecrew.backends.limit_states import LimitSwap
        from stagecrew.backends.redis import backend as redis_backend

        backend = make_backend(FakeClock())
        names = [f"rate:{i}" for i in range(300)]  # past a listpack: HSCAN pages for real
        for first in range(0, len(names), 100):
            swaps = [LimitSwap(n, None, "1", 60.0) for n in names[first : first + 100]]
            assert backend.swap_limits(swaps).applied
        backend.swap_limits([LimitSwap("circuit:x", None, "1", 60.0)])
        monkeypatch.setattr(redis_backend, "LIMITS_PAGE", 7)
        assert [r.name for r in backend.list_limits("rate:")] == sorted(names)
        assert len(backend.list_limits()) == 301

    def test_prune_deletes_in_batches_up_to_its_limit(
        self, make_backend: Callable[..., RedisBackend], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from stagecrew.backends.limit_states import LimitSwap
        from stagecrew.backends.redis import backend as redis_backend

        clock = FakeClock()
        backend = make_backend(clock)
        backend.swap_limits([LimitSwap(f"rate:{i}", None, "1", 1.0) for i in range(25)])
        clock.advance(2.0)
        monkeypatch.setattr(redis_backend, "PRUNE_RECORDS_BATCH", 10)
        assert backend.prune_limits(0) == 0
        assert backend.prune_limits(12) == 12
        assert backend.prune_limits() == 13
        client = raw(backend)
        assert client.exists(backend._keys.limits, backend._keys.limits_expiry) == 0
