"""The pytest plugin as a user's test suite meets it: without an app, the error names the
`stagecrew_app` fixture to define; with one, `stagecrew_kit` runs its jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _pytest(directory: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STAGECREW_APP", "STAGECREW_URL")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env=env,
        cwd=directory,
    )


def test_without_an_app_the_error_names_the_fixture_to_define(tmp_path: Path) -> None:
    (tmp_path / "test_users.py").write_text(
        "def test_uses_the_kit(stagecrew_kit):\n    assert stagecrew_kit\n"
    )
    done = _pytest(tmp_path)
    assert done.returncode != 0
    assert "define a `stagecrew_app` fixture in your conftest.py" in done.stdout, done.stdout
    assert "--app" not in done.stdout


def test_a_conftest_fixture_gives_the_kit_its_app(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from stagecrew import App

            app = App("memory://")

            @app.task
            def double(n: int) -> int:
                return 2 * n

            @pytest.fixture
            def stagecrew_app():
                return app
            """
        )
    )
    (tmp_path / "test_users.py").write_text(
        textwrap.dedent(
            """
            from conftest import double

            def test_runs_a_job(stagecrew_kit):
                handle = double.enqueue(21)
                stagecrew_kit.run_until_idle()
                assert handle.get().result == 42
            """
        )
    )
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout
