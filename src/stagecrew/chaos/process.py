"""One chaos worker process: `python -m stagecrew.chaos.process '<options as JSON>'`.

It runs exactly what a supervisor's child runs (`run_child`) on the chaos app,
so the scenario runner, acting as the supervisor, knows the pid of every
process that runs jobs and can kill, pause or stop each one.
"""

from __future__ import annotations

import json
import sys

from ..worker.supervisor import WorkerOptions, run_child
from .tasks import APP_REF


def main(argv: list[str]) -> None:
    options = WorkerOptions(**json.loads(argv[0])) if argv else WorkerOptions()
    run_child(APP_REF, options)


if __name__ == "__main__":
    main(sys.argv[1:])
