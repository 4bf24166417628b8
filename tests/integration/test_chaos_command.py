"""`stagecrew chaos`: real scenarios from the command line, a report, an honest exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stagecrew import App
from stagecrew.chaos import harness
from stagecrew.cli import chaos as chaos_command
from stagecrew.cli.main import main
from stagecrew.testing.audit import Check, audit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_chaos_command_runs_scenarios_on_sqlite_and_cleans_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chaos.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("STAGECREW_URL", None)
    command = [sys.executable, "-m", "stagecrew", "chaos", "--url", url, "--jobs", "60"]
    command += ["--scenario", "kill-storm", "--scenario", "poison-job", "--seed", "3"]
    command += ["--workdir", str(tmp_path / "work")]
    done = subprocess.run(
        command,
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"kill-storm on {url}: OK" in done.stdout
    assert f"poison-job on {url}: OK" in done.stdout
    assert "60 enqueued, 60 completed" in done.stdout
    assert "all 2 scenarios OK" in done.stdout
    assert (tmp_path / "work" / "kill-storm" / "ledger.txt").exists()
    app = App(url)
    assert app.jobs.list(queue="stagecrew-chaos") == []  # the scenarios removed their jobs
    app.close()


def test_a_failed_report_makes_the_command_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(name: str, options: harness.ChaosOptions) -> object:
        return audit([], [1], checks=[Check("a check", False)], title=f"{name} on test")

    monkeypatch.setattr(chaos_command, "run_scenario", failing)
    result = CliRunner().invoke(main, ["chaos", "--url", "memory://", "--scenario", "kill-storm"])
    assert result.exit_code == 1
    assert "kill-storm on test: FAILED" in result.output
    assert "lost: 1" in result.output
    assert "1 of 1 scenarios failed: kill-storm" in result.output


def test_the_command_needs_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECREW_URL", raising=False)
    result = CliRunner().invoke(main, ["chaos"])
    assert result.exit_code == 2
    assert "--url" in result.output
