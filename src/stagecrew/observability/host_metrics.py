"""One metrics endpoint per host: a supervisor serves the sum of its worker processes.

prometheus-client's multiprocess mode: each worker process writes its values to files of its
own in one directory (named by `PROMETHEUS_MULTIPROC_DIR`), and the supervisor, when
scraped, reads and sums them all. Counters and histograms keep the counts of processes
that exited (a restarted worker's jobs still count); the slot gauges sum the live processes
only (`livesum`), the supervisor removing a process's gauges when it sees it exit.

The directory is new for every run of a supervisor, private to it (mode 0700, its name
carrying the supervisor's pid), and removed when the supervisor exits: counts never leak from
one run into the next, nor between two supervisors on one host. It must be named in the
environment before the first worker process starts, as prometheus-client chooses its mode
once, when it is imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ..errors import ConfigurationError
from .metrics import WorkerMetrics
from .metrics_server import MetricsServer

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class HostMetrics:
    """The endpoint of one supervisor run and the directory its worker processes write to.

    Opening it makes the directory, names it in this process's environment (which the
    worker processes inherit) and binds the port, raising `ConfigurationError` when it
    cannot: before any worker starts. `close` stops serving, removes the directory and
    restores the environment.
    """

    def __init__(self, host: str, port: int) -> None:
        self.directory = tempfile.mkdtemp(prefix=f"stagecrew-metrics-{os.getpid()}-")
        self._previous = os.environ.get(DIRECTORY_VARIABLE)
        os.environ[DIRECTORY_VARIABLE] = self.directory
        try:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
            self.server = MetricsServer(registry, host, port)
        except BaseException:
            self._remove()
            raise

    @property
    def url(self) -> str:
        return self.server.url

    def process_exited(self, pid: int) -> None:
        """A worker process exited: its slots no longer count (its job counts still do)."""
        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        try:
            self.server.close()
        finally:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._previous is None:
            os.environ.pop(DIRECTORY_VARIABLE, None)
        else:
            os.environ[DIRECTORY_VARIABLE] = self._previous

    def __enter__(self) -> HostMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def process_metrics() -> WorkerMetrics:
    """The metrics of this worker process, written to its supervisor's directory.

    prometheus-client picks its multiprocess mode when first imported; a process forked
    from one that imported it before the directory was named would count in memory only,
    and serve nothing. That choice is made again here, in that case.
    """
    if not os.environ.get(DIRECTORY_VARIABLE):
        raise ConfigurationError(
            f"worker metrics across processes need {DIRECTORY_VARIABLE} set by the supervisor"
        )
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return WorkerMetrics(registry=None)
