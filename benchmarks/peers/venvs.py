"""One virtual environment per peer library, created from PyPI on first use and reused.

Each lives in `benchmarks/peers/.venvs/<library>/` (ignored by git) and holds only that
library's pinned packages, so no peer ever enters the project's own dependencies. A venv
records the requirements it was built from; a change of pins builds it again.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"
STAMP = "requirements.txt"


class InstallError(RuntimeError):
    """A peer's venv could not be created or its packages installed."""


def venv_python(library: str) -> Path:
    return VENVS / library / "bin" / "python"


def ensure_venv(library: str, packages: Sequence[str]) -> Path:
    """The python of `library`'s venv, with exactly `packages` installed (built if needed)."""
    root = VENVS / library
    wanted = "\n".join(packages) + "\n"
    stamp = root / STAMP
    if stamp.exists() and stamp.read_text() == wanted and venv_python(library).exists():
        return venv_python(library)
    shutil.rmtree(root, ignore_errors=True)
    print(f"  creating the venv of {library}: {' '.join(packages)}", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(root)],
        [str(venv_python(library)), "-m", "pip", "install", "--quiet", *packages],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InstallError(f"{' '.join(step[:4])} failed: {last[0]}")
    stamp.write_text(wanted)
    return venv_python(library)


def installed_version(python: Path, distribution: str) -> str:
    """The version of `distribution` in the venv of `python`, as pip's metadata says."""
    done = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, importlib.metadata as m; print(m.version(sys.argv[1]))",
            distribution,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()
