"""`stagecrew demo`: real worker processes on a mixed workload, and a summary that adds up."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from stagecrew.cli.main import main
from stagecrew.demo import tasks
from stagecrew.demo.images import PNG_SIGNATURE
from stagecrew.demo.summary import Percentiles
from stagecrew.demo.workload import MIN_JOBS, plan
from tests.support.processes import children_of, descendants_of, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("STAGECREW_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "stagecrew", "demo", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_json_summary_adds_up(tmp_path: Path) -> None:
    args = ["--jobs", "60", "--processes", "2", "--concurrency", "8", "--json"]
    args += ["--url", "sqlite:///demo.db", "--output-dir", str(tmp_path / "out")]
    done = _run_demo(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)

    assert summary["enqueued"] == summary["stored"] == 60
    assert summary["missing"] == []
    assert summary["succeeded"] + summary["dead"] == 60
    assert summary["unfinished"] == summary["cancelled"] == 0
    assert summary["worker_exit_code"] == 0
    assert summary["as_expected"] is True
    assert sum(t["jobs"] for t in summary["by_task"].values()) == 60

    dead = {d["id"]: d for d in summary["dead_letters"]}
    assert set(dead) == set(summary["expected_dead"])
    reasons = sorted((d["task"], d["kind"], d["reason"].split(":")[0]) for d in dead.values())
    assert reasons == [
        ("import_contact", "error", "MalformedRecordError"),
        ("import_contact", "error", "MalformedRecordError"),
        ("resize_legacy", "unrunnable", "UnknownTaskError"),
        ("thumbnail", "unrunnable", "InvalidArgumentsError"),
    ]
    assert all(d["attempts"] == 1 for d in dead.values()), "poison jobs are not retried"

    webhooks = summary["by_task"]["webhook"]
    assert webhooks["succeeded"] == webhooks["jobs"], "flaky webhooks recover by retrying"
    assert summary["retried"] == webhooks["retried"]
    assert summary["thumbnails_verified"] == summary["thumbnails_succeeded"] > 0
    assert summary["throughput"] > 0
    for latency in ("wait", "run", "end_to_end"):
        assert summary[latency]["count"] == summary["succeeded"]
        assert 0 <= summary[latency]["p50"] <= summary[latency]["p99"]
    assert summary["elapsed_seconds"] < 30
    assert (tmp_path / "out" / "workers.log").read_text().count("all workers stopped") == 1


@pytest.mark.slow
def test_demo_starts_from_a_fresh_store_and_prints_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--jobs", str(MIN_JOBS), "--processes", "1", "--concurrency", "4"]
    args += ["--output-dir", str(tmp_path / "out")]
    for _ in range(2):
        result = CliRunner().invoke(main, ["demo", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert re.search(rf"processed\s+{MIN_JOBS} of {MIN_JOBS} \(0 unfinished\)", result.stdout)
    assert "1 worker process x 4 concurrent jobs" in " ".join(result.stdout.split())
    for heading in ("per task", "dead-letter queue", "wait latency", "throughput"):
        assert heading in result.stdout
    with sqlite3.connect(tmp_path / "stagecrew-demo.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM stagecrew_jobs").fetchone()
    assert count == MIN_JOBS, "the second run deleted the first run's jobs"


def test_demo_will_not_delete_a_database_that_is_not_a_demo_store(tmp_path: Path) -> None:
    precious = tmp_path / "app.db"
    with sqlite3.connect(precious) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    result = CliRunner().invoke(main, ["demo", "--url", f"sqlite:///{precious}"])
    assert result.exit_code == 1
    assert "will not delete it" in result.stderr
    assert precious.exists()


def test_demo_runs_on_sqlite_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--url", "memory://"])
    assert result.exit_code == 2
    assert "the demo runs on SQLite" in result.stderr


# -- the pieces ---------------------------------------------------------------
def test_workload_plan_adds_up_to_the_requested_jobs() -> None:
    for total in (MIN_JOBS, 60, 299, 300, 1000):
        assert sum(plan(total).values()) + 5 == total


def test_thumbnail_writes_a_valid_png_of_the_promised_size(tmp_path: Path) -> None:
    result = tasks.thumbnail(7, str(tmp_path), size=16)
    data = Path(result["path"]).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert result["bytes"] == len(data)
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (16, 12, 8, 2)
    idat_length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_length])
    assert len(raw) == height * (1 + width * 3)
    assert tasks.thumbnail(7, str(tmp_path), size=16)["sha256"] == result["sha256"]
    assert tasks.thumbnail(8, str(tmp_path), size=16)["sha256"] != result["sha256"]


def test_webhook_failures_are_reproducible_and_about_a_third_of_first_attempts() -> None:
    first = [tasks._fails(job_id, 1) for job_id in range(1, 2001)]
    assert first == [tasks._fails(job_id, 1) for job_id in range(1, 2001)]
    assert 0.25 < sum(first) / len(first) < 0.35
    assert not any(tasks._fails(job_id, 3) for job_id in range(1, 2001))


def test_malformed_contacts_are_not_retried() -> None:
    app = tasks.create_app("memory://")
    task = app.tasks["import_contact"]
    assert not task.retryable(tasks.MalformedRecordError("bad"))
    with pytest.raises(tasks.MalformedRecordError):
        tasks.import_contact({"name": "No Email"})
    assert tasks.import_contact({"name": " Ada ", "email": "ADA@example.com"}) == {
        "name": "Ada",
        "email": "ada@example.com",
    }


def test_percentiles_use_the_nearest_rank() -> None:
    p = Percentiles.of([float(i) for i in range(1, 101)])
    assert (p.count, p.p50, p.p99, p.max) == (100, 50.0, 99.0, 100.0)
    assert Percentiles.of([]) == Percentiles(0, None, None, None)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_sigterm_to_the_demo_stops_its_workers_too(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("STAGECREW_URL", None)
    out = tmp_path / "out"
    args = ["demo", "--jobs", "2000", "--json", "--url", "sqlite:///demo.db"]
    demo = subprocess.Popen(
        [sys.executable, "-m", "stagecrew", *args, "--output-dir", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    supervisors: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            (out / "workers.log").exists()
            and (out / "workers.log").read_text(errors="replace").count(" started: queues=") >= 2
        ):
            time.sleep(0.05)
        supervisors = children_of(demo.pid)
        assert supervisors, "the demo started no workers"
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) != 0
        assert wait_for(lambda: not any(_alive(pid) for pid in supervisors), 30), (
            "the demo's workers outlived it"
        )
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in supervisors:
            if _alive(pid):
                for child in descendants_of(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # the workers' session
