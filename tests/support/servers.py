"""Throwaway redis-server and PostgreSQL instances, for tests that crash, restart or stop them.

The shared servers of a test machine are used by other test runs at the same time, so a test
that takes its store away starts one of its own: on a free port, in a directory of its own, and
gone afterwards. Without the binaries (or, for PostgreSQL, a user allowed to run the server)
`missing_reason()` says why; the caller skips, or fails in CI.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

REDIS_BINARY = shutil.which("redis-server")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(1000):
        port = random.randrange(20_000, 50_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a throwaway server")


class RedisServer:
    """One redis-server process; `settings` are its command-line options (name -> value)."""

    def __init__(self, directory: Path, **settings: str | tuple[str, ...]) -> None:
        self.directory = directory
        self.port = free_port()
        self.settings: dict[str, str | tuple[str, ...]] = {
            "save": "",
            "appendonly": "no",
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2)

    def start(self) -> None:
        assert REDIS_BINARY is not None
        args = [REDIS_BINARY, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        for name, value in self.settings.items():
            values = value if isinstance(value, tuple) else (value,)
            args += [f"--{name.replace('_', '-')}", *values]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = self.client()
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    if self.process.poll() is not None:
                        log = (self.directory / "redis.log").read_text()
                        raise RuntimeError(f"redis-server exited: {log[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start within 15 s")
                time.sleep(0.02)
        finally:
            client.close()

    def crash(self) -> None:
        """SIGKILL: what a power cut or the OOM killer does."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.crash()
        self.start()


# -- PostgreSQL ------------------------------------------------------------------------------
def _postgres_bin() -> Path | None:
    """The newest server install's bin folder (Debian keeps them in /usr/lib/postgresql/N)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PostgresCluster:
    """A private PostgreSQL cluster (initdb) in a temp folder, listening on 127.0.0.1:<port>.

    PostgreSQL refuses to run as root, so as root every server command runs as the `postgres`
    user (`runuser`), in a folder that user owns; pytest's own tmp_path (mode 0700, owned by
    root) would not do.
    """

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.directory: Path | None = None
        self._as: list[str] = []

    @staticmethod
    def missing_reason() -> str | None:
        """Why a private cluster cannot run here, or None if it can."""
        if _postgres_bin() is None:
            return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root, and there is no `postgres` user to run initdb as"
            if shutil.which("runuser") is None:
                return "running as root, and `runuser` is missing to run initdb as `postgres`"
        return None

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        assert self.bin is not None and self.directory is not None
        command = [*self._as, str(self.bin / args[0]), *args[1:]]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stdout}{done.stderr}{tail}"
            )

    def create(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="stagecrew-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"),
                  "-o", options, "-w", "-t", "30", "start")  # fmt: skip
        self._wait_ready()

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` kills every process without a checkpoint, like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """`pg_ctl restart`: the same options, every session cut, crash recovery on start."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"),
                  "-m", mode, "-w", "-t", "30", "restart")  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def remove(self) -> None:
        if self.directory is None:
            return
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
