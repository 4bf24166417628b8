"""The Redis engine against throwaway redis-server processes this module starts and stops.

Restarts, crashes, SCRIPT FLUSH, out-of-memory and eviction policies would disturb a shared
Redis, so each test here runs its own `redis-server` (found with `shutil.which`) on a free port,
with its own directory under the test's tmp_path, and kills it afterwards. Without the binary
these tests skip, except in CI (the CI variable set), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from tests.support.processes import start_worker, stop, wait_for, write_app
from tests.support.servers import REDIS_BINARY, RedisServer

from stagecrew import App, JobState
from stagecrew.backends.base import Ack, AckKind, JobFilter, Retention
from stagecrew.backends.redis import RedisBackend
from stagecrew.clock import FakeClock
from stagecrew.errors import BackendError, ConfigurationError, EnqueueError
from stagecrew.job import NewJob
from stagecrew.testing.conformance import BackendConformance, BackendFactory
from stagecrew.testing.ledger import Ledger, check

S = JobState
PAYLOAD = '{"args":[],"kwargs":{}}'
LEASE = 30.0


@pytest.fixture(scope="module", autouse=True)
def _redis_binary() -> None:
    if REDIS_BINARY is None:
        reason = "redis-server is not installed: the throwaway-server tests need it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def start(**settings: str | tuple[str, ...]) -> RedisServer:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = RedisServer(directory, **settings)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.crash()


@pytest.fixture
def backends() -> Iterator[Callable[..., RedisBackend]]:
    made: list[RedisBackend] = []

    def make(url: str, clock: Any = None) -> RedisBackend:
        backend = RedisBackend(url, clock)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.close()


def job(task: str = "t", **fields: Any) -> NewJob:
    return NewJob(task=task, payload=fields.pop("payload", PAYLOAD), **fields)


# -- scripts ---------------------------------------------------------------------------
def test_scripts_are_loaded_again_after_script_flush(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers()
    backend = backends(server.url, FakeClock())
    backend.enqueue([job(queue="a"), job(queue="b")])
    client = server.client()
    client.script_flush()
    [entry] = backend.enqueue([job(queue="a")])  # one script
    client.script_flush()
    claimed = backend.claim(["a", "b"], "w", 10, LEASE)  # pipelines of several
    assert entry.id in {c.id for c in claimed}
    client.script_flush()
    assert backend.ack([Ack(c.ref, AckKind.COMPLETE) for c in claimed]) == [True] * 3

    async def scenario() -> None:
        client.script_flush()
        [late] = await backend.enqueue_async([job(queue="a")])
        client.script_flush()
        [claimed] = await backend.claim_async(["a"], "w", 1, LEASE)
        assert claimed.id == late.id

    asyncio.run(scenario())
    assert {s.queue: s.count(S.SUCCEEDED) for s in backend.stats()} == {"a": 2, "b": 1}


# -- out of memory -----------------------------------------------------------------------
def test_enqueue_out_of_memory_raises_and_writes_nothing_while_workers_carry_on(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers(maxmemory="4mb", maxmemory_policy="noeviction")
    clock = FakeClock()
    backend = backends(server.url, clock)
    big = '{"args":["' + "x" * 4000 + '"],"kwargs":{}}'
    stored = 0
    with pytest.raises(EnqueueError, match=r"out of memory.*nothing") as raised:
        for _ in range(10_000):
            backend.enqueue([job(payload=big) for _ in range(10)])
            stored += 10
    assert "maxmemory" in str(raised.value)
    client = server.client()
    assert int(client.get(f"{{{backend.prefix}}}:ids") or 0) == stored
    assert len(backend.list_jobs(JobFilter())) == stored
    with pytest.raises(EnqueueError):  # a batch over two queues: refused as a whole
        backend.enqueue([job(queue="default"), job(queue="other")])
    assert len(backend.list_jobs(JobFilter())) == stored
    assert client.exists(f"{{{backend.prefix}:other}}:registered") == 0

    # Workers still claim, record outcomes and prune: that is how Redis gets out of it.
    claimed = backend.claim(["default"], "w", stored, LEASE)
    assert len(claimed) == stored
    assert backend.ack([Ack(c.ref, AckKind.COMPLETE) for c in claimed]) == [True] * stored
    clock.advance(10.0)
    assert backend.prune(Retention(succeeded=1.0), limit=stored) == stored
    [entry] = backend.enqueue([job(payload=big)])
    assert backend.get(entry.id) is not None


# -- preflight ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_preflight_refuses_an_eviction_policy_that_may_evict_job_keys(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend], policy: str
) -> None:
    server = servers(maxmemory="64mb", maxmemory_policy=policy, appendonly="yes")
    with pytest.raises(ConfigurationError, match=f"{policy}.*noeviction.*allow_eviction=1"):
        backends(server.url).preflight()
    warnings = backends(f"{server.url}?allow_eviction=1").preflight()
    assert any(policy in w and "allow_eviction=1" in w for w in warnings)


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl"])
def test_preflight_accepts_policies_that_never_evict_job_keys(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend], policy: str
) -> None:
    server = servers(maxmemory="64mb", maxmemory_policy=policy, appendonly="yes")
    assert backends(server.url).preflight() == []


def test_preflight_warns_loudly_when_nothing_is_persisted(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers()
    [warning] = backends(server.url).preflight()
    assert "persists NOTHING" in warning and "appendonly yes" in warning


def test_preflight_warns_that_rdb_snapshots_alone_lose_recent_jobs(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers(save="3600 1")
    [warning] = backends(server.url).preflight()
    assert "RDB snapshots only" in warning and "3600 1" in warning


def test_preflight_falls_back_to_info_where_config_is_disabled(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers(rename_command=("CONFIG", ""), maxmemory_policy="allkeys-lru")
    with pytest.raises(ConfigurationError, match="allkeys-lru"):
        backends(server.url).preflight()
    server = servers(rename_command=("CONFIG", ""), appendonly="yes")
    [warning] = backends(server.url).preflight()
    assert "CONFIG GET" in warning and "could not be checked" in warning


# -- restarts ------------------------------------------------------------------------------
def test_the_producer_fails_while_redis_is_down_and_works_again_after_a_restart(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers(appendonly="yes", appendfsync="always")
    backend = backends(server.url)
    [before] = backend.enqueue([job()])
    server.crash()
    with pytest.raises(EnqueueError, match="reachable"):
        backend.enqueue([job()])
    with pytest.raises(BackendError):
        backend.claim(["default"], "w", 1, LEASE)
    server.start()
    [after] = backend.enqueue([job()])
    assert after.id > before.id
    assert {c.id for c in backend.claim(["default"], "w", 10, LEASE)} == {before.id, after.id}


def test_wait_survives_a_redis_restart_and_wakes_up_again(
    servers: Callable[..., RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    server = servers(appendonly="yes")
    backend = backends(server.url)
    producer = backends(server.url)

    async def scenario() -> float:
        await backend.wait(["default"], 0.5)  # connected
        waiter = asyncio.create_task(backend.wait(["default"], 10.0))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(server.crash)
        started = time.monotonic()
        await waiter  # the lost connection ends this wait, without an exception
        assert time.monotonic() - started < 5.0
        for _ in range(3):  # while Redis is down: each wait pauses (backoff), none raises
            await backend.wait(["default"], 0.2)
        await asyncio.to_thread(server.start)
        while True:  # until a wait blocks for its whole timeout again
            started = time.monotonic()
            await backend.wait(["default"], 0.3)
            if time.monotonic() - started > 0.25:
                break  # connected and idle
        waiter = asyncio.create_task(backend.wait(["default"], 10.0))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.to_thread(producer.enqueue, [job()])
        await waiter
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0


@pytest.mark.slow
def test_a_redis_crash_and_restart_with_aof_always_during_a_run_loses_nothing(
    servers: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = servers(appendonly="yes", appendfsync="always")
    url = f"{server.url}?prefix=restart"
    ledger_path = tmp_path / "ledger.txt"
    app_ref = write_app(tmp_path)
    env = {"STAGECREW_URL": url, "LEDGER_PATH": str(ledger_path), "JOB_SECONDS": "0.02"}
    app = App(url)

    @app.task(name="work")
    def work(i: int) -> None: ...  # run by the workers' ledger app, registered here to enqueue

    @app.task(name="awork")
    def awork(i: int) -> None: ...

    ids = [h.id for h in work.enqueue_many([(i,) for i in range(300)])]
    ids += [h.id for h in awork.enqueue_many([(i,) for i in range(300)])]
    workers = start_worker(
        tmp_path, app_ref, env, "--processes", "2", "--concurrency", "8", "--lease-seconds", "3"
    )

    def succeeded() -> int:
        return sum(q.count(S.SUCCEEDED) for q in app.jobs.stats())

    try:
        assert wait_for(lambda: succeeded() >= 100, timeout=60)
        done_before_the_crash = succeeded()
        server.crash()  # SIGKILL mid-run: claims and outcomes in flight
        assert done_before_the_crash < len(ids)
        time.sleep(1.0)
        with pytest.raises(EnqueueError):
            work.enqueue(-1)
        server.start()
        ids += [h.id for h in work.enqueue_many([(i,) for i in range(300, 400)])]
        assert wait_for(lambda: succeeded() == len(ids), timeout=120), app.jobs.stats()
    finally:
        code, output = stop(workers)
    report = check(Ledger(ledger_path), ids)
    assert report.lost == frozenset(), output[-3000:]
    assert report.attempts_started_twice == frozenset(), output[-3000:]
    assert {app.jobs.get(i).state for i in ids} == {S.SUCCEEDED}
    assert code == 0, output[-3000:]
    app.close()


# -- Redis Cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """Three primaries, no replicas, every slot covered."""
    cli = shutil.which("redis-cli")
    if cli is None:
        reason = "redis-cli is not installed: it creates the throwaway Redis Cluster"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):
            directory = tmp_path_factory.mktemp("cluster-node")
            node = RedisServer(
                directory,
                cluster_enabled="yes",
                cluster_config_file=str(directory / "nodes.conf"),
                cluster_node_timeout="5000",
            )
            nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ready() -> bool:
            for node in nodes:
                client = node.client()
                try:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                finally:
                    client.close()
            return True

        assert wait_for(ready, timeout=30), "the throwaway Redis Cluster did not come up"
        yield nodes
    finally:
        for node in nodes:
            node.crash()


def cluster_url(nodes: list[RedisServer], **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"cluster": "1", **params}.items())
    return f"{nodes[0].url}?{query}"


class TestRedisClusterConformance(BackendConformance):
    """The whole conformance suite on a three-node Redis Cluster."""

    # Fewer model examples than on one server: every step goes to the node of its slot,
    # and the same scripts run on one server in test_conformance.py at full size.
    @pytest.fixture
    def state_machine_examples(self) -> int:
        return 15

    @pytest.fixture
    def interleaving_examples(self) -> int:
        return 25

    @pytest.fixture
    def backend_factory(self, cluster: list[RedisServer]) -> BackendFactory:
        def make(clock: FakeClock) -> RedisBackend:
            return RedisBackend(cluster_url(cluster, prefix=f"c{uuid.uuid4().hex[:8]}"), clock)

        return make


def queues_on_every_node(nodes: list[RedisServer], prefix: str) -> list[str]:
    """One queue name per node, found by asking which node owns each queue's slot."""
    client = nodes[0].client()
    try:
        owners: dict[int, str] = {}
        for start, end, primary, *_ in client.cluster("slots"):
            for slot in range(start, end + 1):
                owners[slot] = f"{primary[0].decode()}:{primary[1]}"
    finally:
        client.close()
    chosen: dict[str, str] = {}
    for i in range(10_000):
        name = f"q{i}"
        owner = owners[key_slot(f"{{{prefix}:{name}}}:available".encode())]
        chosen.setdefault(owner, name)
        if len(chosen) == len(nodes):
            return list(chosen.values())
    raise AssertionError("no queue name for some node")


def test_one_cluster_store_spreads_queues_over_nodes_and_works_across_them(
    cluster: list[RedisServer], backends: Callable[..., RedisBackend]
) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    clock = FakeClock()
    backend = backends(cluster_url(cluster, prefix=prefix), clock)
    queues = queues_on_every_node(cluster, prefix)
    entries = backend.enqueue([job(queue=q, priority=i) for i, q in enumerate(queues)])
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    keys_per_node = [n.client().dbsize() for n in cluster]
    assert all(count > 0 for count in keys_per_node)
    claimed = backend.claim(queues, "w", 10, LEASE)
    assert [c.queue for c in claimed] == queues  # priority order across nodes
    other = backends(cluster_url(cluster, prefix=prefix), clock)  # knows no job yet
    assert other.ack([Ack(c.ref, AckKind.COMPLETE) for c in claimed]) == [True] * 3
    assert {s.queue: s.count(S.SUCCEEDED) for s in other.stats()} == dict.fromkeys(queues, 1)
    for node in cluster:
        node.client().script_flush()
    [late] = backend.enqueue([job(queue=queues[-1])])
    assert other.get(late.id) is not None

    async def wake_from_another_node() -> float:
        await other.wait([queues[-1]], 0.5)  # connects to the node holding the queue
        waiter = asyncio.create_task(other.wait([queues[-1]], 10.0))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.to_thread(backend.enqueue, [job(queue=queues[-1])])
        await waiter
        return time.monotonic() - started

    assert asyncio.run(wake_from_another_node()) < 2.0
    assert backend.preflight()  # every node was read: they persist nothing, and say so


# -- workers killed ----------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkilled_workers_lose_no_job_and_never_run_an_attempt_twice(
    servers: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = servers()
    url = f"{server.url}?prefix=chaos"
    ledger_path = tmp_path / "ledger.txt"
    app_ref = write_app(tmp_path)
    # Random kills, not a poison job: the supervisor hands a killed worker's jobs straight
    # back, so the next kill often finds them again, and three losses would condemn a job.
    env = {
        "STAGECREW_URL": url,
        "LEDGER_PATH": str(ledger_path),
        "JOB_SECONDS": "0.2",
        "MAX_WORKER_LOSSES": "20",
    }
    app = App(url)

    @app.task(name="work")
    def work(i: int) -> None: ...

    @app.task(name="awork")
    def awork(i: int) -> None: ...

    ids = [h.id for h in work.enqueue_many([(i,) for i in range(300)])]
    ids += [h.id for h in awork.enqueue_many([(i,) for i in range(300)])]
    workers = start_worker(
        tmp_path, app_ref, env, "--processes", "2", "--concurrency", "8", "--lease-seconds", "1"
    )
    ledger = Ledger(ledger_path)
    assert wait_for(lambda: len(ledger.entries()) > 20, timeout=30)
    rng = random.Random(7)
    kills = 0

    def unfinished() -> int:
        waiting = (S.AVAILABLE, S.SCHEDULED, S.RUNNING)
        return sum(q.count(s) for q in app.jobs.stats() for s in waiting)

    try:
        for _ in range(6):
            time.sleep(0.4)
            recent = {e.pid for e in ledger.entries()[-50:]} - {workers.pid}
            alive = [p for p in recent if Path(f"/proc/{p}").exists()]
            if alive:
                os.kill(rng.choice(alive), signal.SIGKILL)
                kills += 1
        assert wait_for(lambda: unfinished() == 0, timeout=90), app.jobs.stats()
    finally:
        code, output = stop(workers)
    report = check(ledger, ids)
    assert kills >= 3, output[-3000:]
    assert report.lost == frozenset(), output[-3000:]
    assert report.attempts_started_twice == frozenset(), output[-3000:]
    assert {app.jobs.get(i).state for i in ids} == {S.SUCCEEDED}
    rescued = [
        j for j in app.jobs.list(limit=1000) if any("worker lost" in e.message for e in j.errors)
    ]
    assert rescued, "no job was rescued from a killed worker"
    assert code == 0, output[-3000:]
    app.close()
