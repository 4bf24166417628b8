"""Redis benchmark: stagecrew against the engine's raw limit, measured in the same run.

Reports enqueue (one by one and batched), drain of pre-queued no-op jobs with real worker
processes, and pickup latency with idle workers. The raw limit is a bare redis-py loop doing,
per job, LPUSH, then an LMOVE claim onto a processing list and an LREM ack (the classic
"reliable queue" with no job state at all), plus `redis-benchmark -t lpush`'s figure when the
binary is installed.

By default it starts a throwaway redis-server (no persistence, like the CI server) on a free
port and removes it afterwards; `--url redis://...` measures an existing server instead (keys
go under a random prefix, deleted at the end; redis-benchmark is then skipped, as it writes a
key of its own).

    python benchmarks/bench_redis.py [--drain-jobs 20000] [--processes 2] [--write-results]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(HERE)]

from stagecrew import App, JobState  # noqa: E402


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


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in (f"{{{prefix}}}:*", f"{{{prefix}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    client.close()


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
def make_app(url: str) -> App:
    import bench_app

    bench_app.app.url = url
    bench_app.app._backend = None
    return bench_app.app


def enqueue_one_by_one(app: App, jobs: int) -> float:
    noop = app.tasks["noop"]
    noop.enqueue(-1)  # connect and register the queue outside the timing
    start = time.perf_counter()
    for i in range(jobs):
        noop.enqueue(i)
    return jobs / (time.perf_counter() - start)


def enqueue_batched(app: App, jobs: int, batch: int) -> float:
    noop = app.tasks["noop"]
    start = time.perf_counter()
    for offset in range(0, jobs, batch):
        noop.enqueue_many([(i,) for i in range(offset, min(jobs, offset + batch))])
    return jobs / (time.perf_counter() - start)


def start_workers(url: str, processes: int, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STAGECREW_URL": url,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src")]),
    }
    return subprocess.Popen(
        [
            sys.executable, "-m", "stagecrew", "worker", "bench_app:app",
            "--processes", str(processes), "--concurrency", str(concurrency),
            "--log-level", "WARNING",
        ],
        env=env,
        cwd=HERE,
        start_new_session=True,
    )  # fmt: skip


def stop_workers(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def count_state(app: App, state: JobState) -> int:
    return sum(q.count(state) for q in app.jobs.stats())


def drain(app: App, url: str, jobs: int, processes: int, concurrency: int, task: str) -> float:
    """Jobs/s from the first claim to the last completion, read from the store."""
    fn = app.tasks[task]
    for offset in range(0, jobs, 5000):
        fn.enqueue_many([(i,) for i in range(offset, min(jobs, offset + 5000))])
    proc = start_workers(url, processes, concurrency)
    try:
        while count_state(app, JobState.SUCCEEDED) < jobs:
            if proc.poll() is not None:
                raise RuntimeError("workers exited during the drain")
            time.sleep(0.05)
    finally:
        stop_workers(proc)
    done = app.jobs.list(state=JobState.SUCCEEDED, task=task, limit=jobs)
    first = min(j.started_at or 0 for j in done)
    last = max(j.finished_at or 0 for j in done)
    return jobs / (last - first)


def pickup_latency(app: App, url: str, samples: int, processes: int) -> tuple[float, float]:
    """Seconds from enqueue to start with idle workers: p50, p99 (store timestamps)."""
    noop = app.tasks["noop"]
    proc = start_workers(url, processes, 10)
    try:
        time.sleep(2.0)  # let the workers start and go idle
        handles = []
        for i in range(samples):
            handles.append(noop.enqueue(i))
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(h.get().state is JobState.SUCCEEDED for h in handles[-5:]):
                break
            time.sleep(0.05)
    finally:
        stop_workers(proc)
    waits = sorted((j.started_at or 0) - j.enqueued_at for j in (h.get() for h in handles))
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    return p50, p99


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


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
    opts = parser.parse_args()

    with contextlib.ExitStack() as stack:
        base = opts.url or stack.enter_context(throwaway_server())
        version = server_version(base)
        prefixes: list[str] = []

        def fresh_url() -> str:
            prefixes.append(f"bench-{uuid.uuid4().hex[:8]}")
            return with_prefix(base, prefixes[-1])

        def clean_up() -> None:
            for prefix in prefixes:
                delete_prefix(base, prefix)

        stack.callback(clean_up)

        raw = raw_loop(base, opts.raw_jobs)
        print(f"raw redis-py loop (LPUSH + LMOVE claim + LREM ack): {raw:,.0f} jobs/s")
        # redis-benchmark writes a key of its own ("mylist"): only on the throwaway server
        lpush = redis_benchmark(base) if opts.url is None else None
        if lpush is not None:
            print(f"redis-benchmark -t lpush -n 100000 -q: {lpush}")
        pings = round_trips(base, opts.raw_jobs)
        print(f"redis-py round trips (PING), for scale: {pings:,.0f}/s")

        url = fresh_url()
        app = make_app(url)
        one = enqueue_one_by_one(app, opts.enqueue_jobs)
        print(f"enqueue one by one: {one:,.0f} jobs/s ({one / raw:.2f}x raw)")
        many = enqueue_batched(app, opts.batch_jobs, 10_000)
        print(f"enqueue_many (batches of 10,000): {many:,.0f} jobs/s ({many / raw:.2f}x raw)")
        app.close()

        results = {}
        for task in ("noop", "noop_sync"):
            url = fresh_url()
            app = make_app(url)
            rate = drain(app, url, opts.drain_jobs, opts.processes, opts.concurrency, task)
            results[task] = rate
            print(
                f"drain {opts.drain_jobs:,} {task} jobs, {opts.processes} processes: "
                f"{rate:,.0f} jobs/s ({rate / raw:.2f}x raw)"
            )
            app.close()

        url = fresh_url()
        app = make_app(url)
        p50, p99 = pickup_latency(app, url, opts.latency_samples, opts.processes)
        print(f"pickup latency, idle workers: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        app.close()

    if opts.write_results:
        write_results(opts, version, raw, lpush, pings, one, many, results, p50, p99)


def write_results(
    opts: argparse.Namespace,
    version: str,
    raw: float,
    lpush: str | None,
    pings: float,
    one: float,
    many: float,
    drains: dict[str, float],
    p50: float,
    p99: float,
) -> None:
    lines = [
        f"## Redis, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Redis {version}, redis-py {redis.__version__}.",
        "",
        "| measurement | figure | ratio to raw loop |",
        "| --- | --- | --- |",
        f"| raw loop: LPUSH + LMOVE claim + LREM ack per job | {raw:,.0f} jobs/s | 1.00 |",
    ]
    if lpush is not None:
        lines.append(f"| redis-benchmark -t lpush -n 100000 -q | {lpush} | |")
    lines.append(f"| redis-py round trips (PING), for scale | {pings:,.0f}/s | |")
    lines += [
        f"| enqueue one by one | {one:,.0f} jobs/s | {one / raw:.2f} |",
        f"| enqueue_many, batches of 10,000 | {many:,.0f} jobs/s | {many / raw:.2f} |",
    ]
    for task, rate in drains.items():
        kind = "async" if task == "noop" else "sync"
        lines.append(
            f"| drain {opts.drain_jobs:,} pre-queued {kind} no-op jobs, "
            f"--processes {opts.processes} --concurrency {opts.concurrency} "
            f"| {rate:,.0f} jobs/s | {rate / raw:.2f} |"
        )
    latency = f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms"
    lines.append(f"| pickup latency, idle workers (p50 / p99) | {latency} | |")
    path = HERE / "RESULTS.md"
    header = "# Benchmark results\n\nProduced by `make bench`; newest first.\n\n"
    previous = path.read_text().removeprefix(header) if path.exists() else ""
    path.write_text(header + "\n".join(lines) + "\n\n" + previous)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
