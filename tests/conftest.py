"""What every test of the suite shares."""

from __future__ import annotations

import os

# pytest-xdist's worker processes get COLUMNS=80 and LINES=24 in their environment. The CLI
# reads COLUMNS as the user's chosen width (piped output is otherwise wide, see
# cli/output.py), so with them every table test would see squeezed output in a worker only.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
