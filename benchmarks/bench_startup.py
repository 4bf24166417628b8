"""Worker start-up: from the exec of `stagecrew worker` to its first claim, on every engine.

Each run enqueues one `started_at` job, starts `stagecrew worker bench_app:app` as a user
would (the console script, default settings, `--processes 1` or `2`), and reads back when
the store saw the first claim (the job's `started_at`, the store's clock) and when the job
began (the time it returned). Runs are sequential and the figures are medians.

`--phases` also starts every process with `startup_probe/` on its path, whose
`sitecustomize` marks the steps of each process (see that module): interpreter start,
stagecrew imported, app loaded, child process started, store checked, first claim sent.

The measured tree is compiled first and run with bytecode writing allowed, as an installed
package would be (an environment with `PYTHONDONTWRITEBYTECODE` would otherwise compile
stagecrew from source in every process).

    python benchmarks/bench_startup.py [--runs 7] [--engines sqlite,postgres,redis] [--phases]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import HERE, SRC, make_app
from stagecrew import JobState
from stagecrew.backends import backend_from_url

PROBE = HERE / "startup_probe"


# -- stores -------------------------------------------------------------------------------------
@contextlib.contextmanager
def store(engine: str) -> Iterator[str]:
    """A fresh, migrated store of `engine` (a file, a schema, a key prefix), removed after."""
    servers = harness.servers
    name = f"bench_start_{uuid.uuid4().hex[:8]}"
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/{name}.db"
            _migrate(url)
            yield url
    elif engine == "postgres":
        base = servers.POSTGRES_SERVER.url
        servers.create_schema(base, name)
        try:
            url = servers.with_schema(base, name)
            _migrate(url)
            yield url
        finally:
            servers.drop_schemas(base, [name])
    elif engine == "redis":
        base = servers.REDIS_SERVER.url
        try:
            url = servers.with_query(base, prefix=name)
            _migrate(url)
            yield url
        finally:
            servers.delete_prefix(base, name)
    else:
        raise SystemExit(f"unknown engine {engine!r}")


def _migrate(url: str) -> None:
    with backend_from_url(url) as backend:
        backend.migrate()


# -- one start --------------------------------------------------------------------------------
def command() -> list[str]:
    """The console script next to this Python, as a user runs it (else `python -m`)."""
    script = Path(sys.executable).parent / "stagecrew"
    if script.exists():
        return [str(script), "worker", "bench_app:app"]
    return [sys.executable, "-m", "stagecrew", "worker", "bench_app:app"]


@dataclass
class Start:
    claim: float
    """Seconds from the exec to the store's time of the first claim."""
    job: float
    """Seconds from the exec to the job's first line."""
    phases: dict[str, float] = field(default_factory=dict)


def start_once(url: str, processes: int, marks: Path | None) -> Start:
    app = make_app(url)
    handle = app.tasks["started_at"].enqueue()
    path = [str(HERE), str(SRC)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["STAGECREW_URL"] = url
    if marks is not None:
        path.insert(0, str(PROBE))
        env["STAGECREW_STARTUP_MARKS"] = str(marks)
        marks.unlink(missing_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(path)
    exec_at = time.time()
    proc = subprocess.Popen(
        [*command(), "--processes", str(processes)],
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (job := handle.get()).state is not JobState.SUCCEEDED:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not run the job (state {job.state})")
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        app.close()
    assert job.started_at is not None
    start = Start(claim=job.started_at - exec_at, job=float(job.result) - exec_at)
    if marks is not None:
        start.phases = phases(marks.read_text(), proc.pid, exec_at)
    return start


def phases(text: str, parent: int, exec_at: float) -> dict[str, float]:
    """Each step's duration (s) from the marks of one run; see startup_probe/sitecustomize.

    A spawned child marks its own interpreter start; a forked one starts at `run_child`. A
    fork server is the process that imports an engine but never runs `run_child`.
    """
    firsts: dict[int, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        pid, event, at = line.split()
        firsts[int(pid)].setdefault(event, float(at))
    top = firsts.pop(parent)
    claimed = [m for m in firsts.values() if "claim" in m]
    servers = [m for m in firsts.values() if "run-child" not in m and "imported-engine" in m]
    if "fork-server-start" not in top:  # children spawned: one of them may be still importing
        servers = []
    if not claimed:
        return {}
    child = min(claimed, key=lambda m: m["claim"])
    born = child.get("process-start", child["run-child"])
    steps = {
        "interpreter start": top["process-start"] - exec_at,
        "import stagecrew": top["imported-stagecrew"] - top["process-start"],
        "import the CLI": top["load-app"] - top["imported-stagecrew"],
        "load the app": top["app-loaded"] - top["load-app"],
        "check the store URL": top["child-start"] - top["app-loaded"],
    }
    if servers:
        [server] = servers
        steps["fork server: its start"] = server["process-start"] - top["fork-server-start"]
        steps["fork server: its imports"] = server["imported-engine"] - server["process-start"]
    steps |= {
        "first child: started after": born - top["child-start"],
        "child: its imports": child["run-child"] - born,
        "child: load the app": child["worker-run"] - child["run-child"],
        "child: store checks": child["store-open"] - child["open-store"],
        "child: to first claim": child["claim"] - child["store-open"],
        "child: its start to claim": child["claim"] - born,
        "exec to claim sent": child["claim"] - exec_at,
    }
    return steps


# -- the report -----------------------------------------------------------------------------------
def median_ms(values: list[float]) -> str:
    """The median in ms, with the range."""
    low, high = min(values) * 1000, max(values) * 1000
    return f"{statistics.median(values) * 1000:.0f} ms ({low:.0f}-{high:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--engines", default="sqlite,postgres,redis")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--phases", action="store_true", help="also time each step")
    args = parser.parse_args()
    compileall.compile_dir(str(SRC), quiet=1)
    compileall.compile_dir(str(HERE), quiet=1, maxlevels=1)
    print(f"tree: {SRC}; command: {' '.join(command())}")
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp) / "marks" if args.phases else None
        for engine in args.engines.split(","):
            with store(engine) as url:
                for processes in (int(p) for p in args.processes.split(",")):
                    start_once(url, processes, None)  # warm the page cache and the server
                    runs = [start_once(url, processes, marks) for _ in range(args.runs)]
                    print(
                        f"{engine:9} --processes {processes}: exec to first claim "
                        f"{median_ms([r.claim for r in runs])}, to the job's start "
                        f"{median_ms([r.job for r in runs])}"
                    )
                    if marks is not None:
                        for step in runs[0].phases:
                            values = [r.phases[step] for r in runs if step in r.phases]
                            print(f"    {step:28} {median_ms(values)}")
    print(harness.machine("all engines"))


if __name__ == "__main__":
    main()
