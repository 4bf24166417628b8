"""Redis benchmark: stagecrew against the engine's raw limit, measured in the same run.

Reports enqueue (one by one and batched), drain of pre-queued no-op jobs with real worker
processes, and pickup latency with idle workers. The raw limits, all bare redis-py loops on the
same server: per job LPUSH, then an LMOVE claim onto a processing list and an LREM ack (the
classic "reliable queue" with no job state at all); the LMOVE claim + LREM ack alone over
pre-queued jobs (the ceiling of a drain); a bare LPUSH per job and a bare EVALSHA per job (the
ceilings of a one-by-one enqueue: no job state, and a script call's floor); LPUSHes pipelined
10,000 per round trip (the ceiling of enqueue_many); plus `redis-benchmark -t lpush`'s figure
when the binary is installed.

By default it starts a throwaway redis-server (no persistence, like the CI server) on a free
port and removes it afterwards; `--url redis://...` measures an existing server instead (keys
go under a random prefix, deleted at the end; redis-benchmark is then skipped, as it writes a
key of its own).

    python benchmarks/bench_redis.py [--drain-jobs 20000] [--processes 2] [--write-results]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

import harness
from harness import drain, enqueue_batched, enqueue_one_by_one, make_app, pickup_latency


# -- the server ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: pass --url redis://host:port/db")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", tmp, "--logfile", str(Path(tmp) / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


delete_prefix = harness.servers.delete_prefix


def server_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


# -- raw limits -------------------------------------------------------------------------
def raw_loop(url: str, jobs: int) -> float:
    """Jobs/s of the bare loop: LPUSH, then LMOVE claim and LREM ack, per job."""
    client = redis.Redis.from_url(url)
    queue, processing = f"bench-raw:{uuid.uuid4().hex}", f"bench-raw:{uuid.uuid4().hex}:busy"
    start = time.perf_counter()
    for i in range(jobs):
        client.lpush(queue, f'{{"args":[{i}]}}')
        item = client.lmove(queue, processing, "RIGHT", "LEFT")
        client.lrem(processing, 1, item)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    client.delete(queue, processing)
    client.close()
    return jobs / elapsed


def raw_claim_ack(url: str, jobs: int) -> float:
    """Jobs/s of bare claims and acks of pre-queued jobs: LMOVE claim + LREM ack per job."""
    client = redis.Redis.from_url(url)
    queue, processing = f"bench-raw:{uuid.uuid4().hex}", f"bench-raw:{uuid.uuid4().hex}:busy"
    for offset in range(0, jobs, 10_000):
        batch = range(offset, min(jobs, offset + 10_000))
        client.lpush(queue, *(f'{{"args":[{i}]}}' for i in batch))
    start = time.perf_counter()
    for _ in range(jobs):
        item = client.lmove(queue, processing, "RIGHT", "LEFT")
        client.lrem(processing, 1, item)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    client.delete(queue, processing)
    client.close()
    return jobs / elapsed


def raw_lpush(url: str, jobs: int) -> float:
    """Jobs/s of a bare LPUSH per job through redis-py: an enqueue with no job state at all."""
    client = redis.Redis.from_url(url)
    queue = f"bench-raw:{uuid.uuid4().hex}"
    client.ping()
    start = time.perf_counter()
    for i in range(jobs):
        client.lpush(queue, f'{{"args":[{i}]}}')
    elapsed = time.perf_counter() - start
    client.delete(queue)
    client.close()
    return jobs / elapsed


def raw_evalsha(url: str, jobs: int) -> float:
    """Jobs/s of a bare EVALSHA per job (a script doing one LPUSH): the floor of a script call."""
    client = redis.Redis.from_url(url)
    queue = f"bench-raw:{uuid.uuid4().hex}"
    sha = client.script_load("return redis.call('LPUSH', KEYS[1], ARGV[1])")
    start = time.perf_counter()
    for i in range(jobs):
        client.evalsha(sha, 1, queue, f'{{"args":[{i}]}}')
    elapsed = time.perf_counter() - start
    client.delete(queue)
    client.close()
    return jobs / elapsed


def raw_pipelined_lpush(url: str, jobs: int, batch: int) -> float:
    """Jobs/s of LPUSH per job, `batch` commands pipelined per round trip (redis-py)."""
    client = redis.Redis.from_url(url)
    queue = f"bench-raw:{uuid.uuid4().hex}"
    start = time.perf_counter()
    for offset in range(0, jobs, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(offset, min(jobs, offset + batch)):
            pipe.lpush(queue, f'{{"args":[{i}]}}')
        pipe.execute()
    elapsed = time.perf_counter() - start
    client.delete(queue)
    client.close()
    return jobs / elapsed


def round_trips(url: str, count: int) -> float:
    """PINGs/s through redis-py: one round trip, the floor under any one-by-one operation."""
    client = redis.Redis.from_url(url)
    client.ping()
    start = time.perf_counter()
    for _ in range(count):
        client.ping()
    elapsed = time.perf_counter() - start
    client.close()
    return count / elapsed


def redis_benchmark(url: str) -> str | None:
    """`redis-benchmark -t lpush -n 100000 -q`'s figure, or None without the binary."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    client = redis.Redis.from_url(url)
    kwargs = client.connection_pool.connection_kwargs
    client.close()
    out = subprocess.run(
        [
            binary, "-h", str(kwargs.get("host", "127.0.0.1")), "-p", str(kwargs.get("port", 6379)),
            "-t", "lpush", "-n", "100000", "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    # -q prints progress lines separated by carriage returns; the last one is the result
    lines = [p.strip() for p in re.split(r"[\r\n]+", out.stdout) if "requests per second" in p]
    return lines[-1] if lines else out.stdout.strip() or out.stderr.strip()


# -- stagecrew ---------------------------------------------------------------------------
def with_prefix(url: str, prefix: str) -> str:
    return str(harness.servers.with_query(url, prefix=prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="an existing Redis (default: a throwaway redis-server)")
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--raw-jobs", type=int, default=20_000)
    parser.add_argument("--enqueue-jobs", type=int, default=10_000)
    parser.add_argument("--batch-jobs", type=int, default=100_000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    opts = parser.parse_args()
    r: dict[str, Any] = {}

    with contextlib.ExitStack() as stack:
        base = opts.url or stack.enter_context(throwaway_server())
        r["version"] = server_version(base)
        prefixes: list[str] = []

        def fresh_url() -> str:
            prefixes.append(f"bench-{uuid.uuid4().hex[:8]}")
            return with_prefix(base, prefixes[-1])

        def clean_up() -> None:
            for prefix in prefixes:
                delete_prefix(base, prefix)

        stack.callback(clean_up)

        raw = r["raw"] = raw_loop(base, opts.raw_jobs)
        print(f"raw redis-py loop (LPUSH + LMOVE claim + LREM ack): {raw:,.0f} jobs/s")
        r["raw_claim_ack"] = raw_claim_ack(base, opts.raw_jobs)
        print(f"raw redis-py loop (LMOVE claim + LREM ack): {r['raw_claim_ack']:,.0f} jobs/s")
        r["raw_lpush"] = raw_lpush(base, opts.raw_jobs)
        print(f"raw redis-py LPUSH loop: {r['raw_lpush']:,.0f} jobs/s")
        r["raw_evalsha"] = raw_evalsha(base, opts.raw_jobs)
        print(f"raw redis-py EVALSHA loop (one LPUSH): {r['raw_evalsha']:,.0f} jobs/s")
        r["raw_pipelined"] = raw_pipelined_lpush(base, opts.batch_jobs, 10_000)
        print(f"raw redis-py pipelined LPUSH (10,000 a trip): {r['raw_pipelined']:,.0f} jobs/s")
        # redis-benchmark writes a key of its own ("mylist"): only on the throwaway server
        r["redis_benchmark"] = redis_benchmark(base) if opts.url is None else None
        if r["redis_benchmark"] is not None:
            print(f"redis-benchmark -t lpush -n 100000 -q: {r['redis_benchmark']}")
        r["pings"] = round_trips(base, opts.raw_jobs)
        print(f"redis-py round trips (PING), for scale: {r['pings']:,.0f}/s")

        app = make_app(fresh_url())
        one = r["one"] = enqueue_one_by_one(app, opts.enqueue_jobs)
        print(
            f"enqueue one by one: {one:,.0f} jobs/s ({one / r['raw_lpush']:.2f}x the LPUSH loop, "
            f"{one / r['raw_evalsha']:.2f}x the EVALSHA loop)"
        )
        many = r["many"] = enqueue_batched(app, opts.batch_jobs, 10_000)
        print(
            f"enqueue_many (batches of 10,000): {many:,.0f} jobs/s "
            f"({many / r['raw_pipelined']:.2f}x pipelined LPUSH)"
        )
        app.close()

        r["drains"] = {}
        for task in ("noop", "noop_sync"):
            url = fresh_url()
            app = make_app(url)
            rate = drain(app, url, opts.drain_jobs, opts.processes, opts.concurrency, task).rate
            r["drains"][task] = rate
            print(
                f"drain {opts.drain_jobs:,} {task} jobs, {opts.processes} processes: "
                f"{rate:,.0f} jobs/s ({rate / raw:.2f}x raw, "
                f"{rate / r['raw_claim_ack']:.2f}x raw claim + ack)"
            )
            app.close()

        url = fresh_url()
        app = make_app(url)
        p50, p99 = pickup_latency(app, url, opts.latency_samples, opts.processes)
        r["latency"] = (p50, p99)
        print(f"pickup latency, idle workers: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        app.close()

    harness.write_json(opts.json, r)
    if opts.write_results:
        write_results(opts, r)


def write_results(opts: argparse.Namespace, r: dict[str, Any]) -> None:
    raw = r["raw"]
    lines = [
        f"## Redis, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        harness.machine(f"Redis {r['version']}, redis-py {redis.__version__}"),
        "",
        "| measurement | figure | ratio to raw loop |",
        "| --- | --- | --- |",
        f"| raw loop: LPUSH + LMOVE claim + LREM ack per job | {raw:,.0f} jobs/s | 1.00 |",
        f"| raw loop: LMOVE claim + LREM ack per pre-queued job | {r['raw_claim_ack']:,.0f} "
        f"jobs/s | {r['raw_claim_ack'] / raw:.2f} |",
        f"| raw loop: LPUSH per job | {r['raw_lpush']:,.0f} jobs/s | {r['raw_lpush'] / raw:.2f} |",
        f"| raw loop: EVALSHA (one LPUSH) per job | {r['raw_evalsha']:,.0f} jobs/s | "
        f"{r['raw_evalsha'] / raw:.2f} |",
        f"| raw: LPUSH per job, 10,000 pipelined per round trip | {r['raw_pipelined']:,.0f} "
        f"jobs/s | {r['raw_pipelined'] / raw:.2f} |",
    ]
    if r["redis_benchmark"] is not None:
        lines.append(f"| redis-benchmark -t lpush -n 100000 -q | {r['redis_benchmark']} | |")
    lines += [
        f"| redis-py round trips (PING), for scale | {r['pings']:,.0f}/s | |",
        f"| enqueue one by one | {r['one']:,.0f} jobs/s | {r['one'] / raw:.2f} "
        f"({r['one'] / r['raw_lpush']:.2f} of the LPUSH loop) |",
        f"| enqueue_many, batches of 10,000 | {r['many']:,.0f} jobs/s | {r['many'] / raw:.2f} "
        f"({r['many'] / r['raw_pipelined']:.2f} of pipelined LPUSH) |",
    ]
    for task, rate in r["drains"].items():
        kind = "async" if task == "noop" else "sync"
        lines.append(
            f"| drain {opts.drain_jobs:,} pre-queued {kind} no-op jobs, "
            f"--processes {opts.processes} --concurrency {opts.concurrency} "
            f"| {rate:,.0f} jobs/s | {rate / raw:.2f} |"
        )
    p50, p99 = r["latency"]
    latency = f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms"
    lines.append(f"| pickup latency, idle workers (p50 / p99) | {latency} | |")
    harness.prepend_results(lines)


if __name__ == "__main__":
    main()
