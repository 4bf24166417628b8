"""The docs' examples run as written.

A ```python block whose first line names a file (`# myapp/jobs.py`) is written there, in a
project of its own, and that project's tests run under pytest; every other block of a page
in `SELF_CONTAINED` runs on its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
NAMED = re.compile(r"# ([\w/]+\.py)\n")
SELF_CONTAINED = ["limits.md"]


def blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text())


@pytest.mark.parametrize("page", SELF_CONTAINED)
def test_each_example_of_the_page_runs_on_its_own(page: str) -> None:
    found = blocks(page)
    assert found, f"docs/{page} has no python example"
    for index, source in enumerate(found):
        code = compile(source, f"docs/{page} example {index + 1}", "exec")
        exec(code, {"__name__": f"docs_example_{index}"})


def test_the_testing_pages_project_passes_its_own_tests(tmp_path: Path) -> None:
    written = []
    for source in blocks("testing.md"):
        named = NAMED.match(source)
        if named is None:
            continue
        path = tmp_path / named[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        written.append(named[1])
    assert {"myapp/jobs.py", "tests/test_jobs.py", "tests/conftest.py"} <= set(written)
    (tmp_path / "myapp" / "__init__.py").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("STAGECREW_APP", "STAGECREW_URL")}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
