"""Keeps the jobs table vacuumed when the server's autovacuum will not.

A queue table is rewritten all the time: every claim, ack and heartbeat
leaves a dead row version behind, and every claim a dead entry at the head of
the claim index, which each later claim walks past until VACUUM removes it.
Autovacuum does that (the migration tunes it for this table); on a server
where autovacuum is off, claims slow down as the dead prefix grows (measured:
about 10 ms more per claim per million jobs drained).

So a worker process that claims jobs also starts this thread. With `vacuum=auto`
(the default) it exits at once when the server's autovacuum is on. Otherwise it
reads the table's dead-row count every few seconds and, past a threshold,
runs `VACUUM (SKIP_LOCKED)` on the jobs table, under a session advisory lock so
that one process of the whole fleet vacuums at a time. VACUUM does not block
reads or writes. A role that may not vacuum the table gets one warning and the
thread stops.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import psycopg

from .pools import SyncConnection, connect_kwargs
from .settings import PostgresSettings
from .statements import Statements

log = logging.getLogger("stagecrew.postgres")

CHECK_SECONDS = 2.0
BASE_THRESHOLD = 20_000
SCALE_FACTOR = 0.1
"""Vacuum past BASE_THRESHOLD + SCALE_FACTOR * live rows dead rows: a vacuum costs about one
pass over the table, so a bigger table is vacuumed less often."""


class TableVacuumer:
    def __init__(self, settings: PostgresSettings, statements: Statements) -> None:
        self.settings = settings
        self.sql = statements
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: SyncConnection | None = None
        self.vacuums = 0

    def start(self) -> None:
        if self.settings.vacuum == "off":
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="stagecrew-vacuum", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                conn.cancel_safe(timeout=1.0)  # a VACUUM in progress ends now
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(CHECK_SECONDS if failures == 0 else min(60.0, 5.0 * failures)):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.Connection.connect(
                        self.settings.conninfo, **connect_kwargs(self.settings)
                    )
                if not self._check(self._conn):
                    return
                failures = 0
            except psycopg.errors.InsufficientPrivilege as exc:
                log.warning(
                    "cannot vacuum the jobs table of schema %r (%s); the server's autovacuum is "
                    "off, so claims will slow down as dead rows pile up: turn autovacuum on, or "
                    "run stagecrew's workers as the table's owner",
                    self.settings.schema,
                    str(exc).strip(),
                )
                return
            except psycopg.Error as exc:
                failures += 1
                log.debug("vacuum check failed (%s); trying again later", exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
        if self._conn is not None:
            self._conn.close()

    def _check(self, conn: SyncConnection) -> bool:
        """Vacuum if due; False once there is nothing more to do here (autovacuum is on)."""
        row = conn.execute(self.sql.get("vacuum_check")).fetchone()
        if row is None:
            return True
        dead, live, autovacuum_on = int(row[0]), int(row[1]), bool(row[2])
        if autovacuum_on and self.settings.vacuum == "auto":
            return False
        if dead <= BASE_THRESHOLD + SCALE_FACTOR * live:
            return True
        key = {"key": self.settings.vacuum_lock_key}
        locked = conn.execute(self.sql.get("vacuum_try_lock"), key).fetchone()
        if not locked or not locked[0]:
            return True  # another process is vacuuming
        try:
            started = time.monotonic()
            conn.execute(self.sql.get("vacuum"))
            self.vacuums += 1
            log.info(
                "vacuumed the jobs table of schema %r (%d dead rows, %.1fs): the server's "
                "autovacuum is off",
                self.settings.schema,
                dead,
                time.monotonic() - started,
            )
        finally:
            conn.execute(self.sql.get("vacuum_unlock"), key)
        return True
