"""The PostgreSQL store URL: libpq's own URI, plus a few stagecrew options in its query string.

    postgresql://user:secret@db.example.com:5432/app?schema=jobs&pool_max=8&sslmode=require

stagecrew's options are removed before the URI reaches libpq; every other
query parameter (sslmode, connect_timeout, application_name, ...) is libpq's.

Store timeouts. Every connection stagecrew opens gets libpq's `connect_timeout`,
TCP keepalives and `tcp_user_timeout` from `LIBPQ_DEFAULTS` unless the URL sets
them, so a dead server or a half-open connection fails a call within seconds
instead of the kernel's 15 minutes. stagecrew's own statements also run under a
`statement_timeout` (`?statement_timeout=` seconds, 0 for none), and the client
gives up on a statement the server has not answered within `statement_deadline`
(see pools.py: a peer that stopped answering is noticed by no TCP timeout).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ...errors import ConfigurationError

DEFAULT_SCHEMA = "stagecrew"
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 4
DEFAULT_POOL_TIMEOUT = 30.0
DEFAULT_TASK_POOL_MAX = 10
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_STATEMENT_TIMEOUT = 30.0
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1
LIBPQ_DEFAULTS: dict[str, int] = {
    "connect_timeout": DEFAULT_CONNECT_TIMEOUT,  # seconds to open a connection
    "keepalives": 1,
    "keepalives_idle": 10,  # seconds of silence before the first probe ...
    "keepalives_interval": 5,  # ... then one every 5 s ...
    "keepalives_count": 3,  # ... and the connection is dead after 3 unanswered: ~25 s
    "tcp_user_timeout": 20_000,  # ms sent data may stay unacknowledged (Linux)
}
"""libpq parameters stagecrew sets on every connection where the URL does not set them."""

OPTIONS = {
    "schema": "the schema holding stagecrew's tables (default stagecrew)",
    "pool_min": f"connections each pool keeps open (default {DEFAULT_POOL_MIN})",
    "pool_max": f"most connections each pool opens (default {DEFAULT_POOL_MAX})",
    "pool_timeout": (
        f"seconds to wait for a free pooled connection (default {DEFAULT_POOL_TIMEOUT:g})"
    ),
    "vacuum": (
        "auto (default): stagecrew vacuums its jobs table itself when the server's autovacuum "
        "is off; on: always; off: never"
    ),
    "task_pool_max": (
        "most connections held by tasks' own transactions, ctx.transaction() "
        f"(default {DEFAULT_TASK_POOL_MAX})"
    ),
    "statement_timeout": (
        "seconds one of stagecrew's statements may run on the server "
        f"(default {DEFAULT_STATEMENT_TIMEOUT:g}; 0 = no limit)"
    ),
}


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    conninfo: str
    """The URL without stagecrew's options, for libpq."""
    schema: str
    pool_min: int
    pool_max: int
    pool_timeout: float
    task_pool_max: int
    vacuum: str
    where: str
    """user@host:port/dbname, for messages (never the password)."""
    libpq_defaults: dict[str, int]
    """The `LIBPQ_DEFAULTS` the URL does not set itself, to add to every connection."""
    statement_timeout: float
    """Seconds (0 = none): the server's `statement_timeout` for stagecrew's own statements."""
    libpq_options: str
    """The URL's own libpq `options` (command-line options for the server), or ''."""

    @property
    def statement_deadline(self) -> float | None:
        """Seconds after which the client gives up on an unanswered statement (None: never).

        The server's statement_timeout gets the first word, with a clean error; the
        client waits as long again (5 s more at most) before it closes the connection.
        """
        if self.statement_timeout <= 0:
            return None
        return self.statement_timeout + min(self.statement_timeout, 5.0)

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema's jobs; the payload is a queue name."""
        return self._channel("stagecrew")

    @property
    def finished_channel(self) -> str:
        """The NOTIFY channel of this schema's finished jobs; the payload is their ids,
        comma-joined, or '' for "any job" (see listener.py).

        Its prefix differs from `channel`'s, so no schema's name can make one schema's
        finished channel another's queue channel.
        """
        return self._channel("stagecrew-finished")

    def _channel(self, prefix: str) -> str:
        name = f"{prefix}:{self.schema}"
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:  # PostgreSQL would reject it
            digest = hashlib.blake2b(self.schema.encode(), digest_size=12).hexdigest()
            name = f"{prefix}:{digest}"
        return name

    @property
    def vacuum_lock_key(self) -> int:
        """The advisory lock held by the one process vacuuming this schema's jobs table."""
        digest = hashlib.blake2b(f"stagecrew vacuum {self.schema}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    @property
    def migration_lock_key(self) -> int:
        """The advisory lock that serialises migrations of this schema (other schemas go on)."""
        digest = hashlib.blake2b(f"stagecrew migrate {self.schema}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)


def _number(url: str, name: str, value: str, kind: type[int] | type[float]) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigurationError(f"option {name}={value!r} in {url!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"option {name}={value!r} in {url!r} is not a finite number")
    if number < (0 if name == "pool_min" else 1):
        raise ConfigurationError(f"option {name}={value!r} in {url!r} is too small")
    return number


def _seconds(url: str, name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"option {name}={value!r} in {url!r} is not a number") from None
    if not 0 <= seconds < math.inf:  # false for NaN
        raise ConfigurationError(
            f"option {name}={value!r} in {url!r} must be a finite number of seconds, 0 or more"
        )
    return seconds


def parse_url(url: str) -> PostgresSettings:
    """Split a store URL into libpq's URI and stagecrew's options; validate both."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"not a PostgreSQL store URL: {url!r}; use postgresql://user@host:5432/dbname"
        )
    ours: dict[str, str] = {}
    theirs: list[str] = []  # kept exactly as written: libpq decodes %XX but not "+"
    for piece in parts.query.split("&"):
        name, _, value = piece.partition("=")
        if unquote(name) in OPTIONS:
            ours[unquote(name)] = unquote(value)
        elif piece:
            theirs.append(piece)
    conninfo = urlunsplit(parts._replace(query="&".join(theirs)))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {url!r}: {exc}") from None

    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not schema or len(schema.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in schema:
        raise ConfigurationError(
            f"schema={schema!r} in {url!r} is not a usable schema name "
            f"(1 to {MAX_IDENTIFIER_BYTES} bytes)"
        )
    pool_min = int(_number(url, "pool_min", ours.get("pool_min", str(DEFAULT_POOL_MIN)), int))
    pool_max = int(_number(url, "pool_max", ours.get("pool_max", str(DEFAULT_POOL_MAX)), int))
    if pool_min > pool_max:
        raise ConfigurationError(f"pool_min is larger than pool_max in {url!r}")
    pool_timeout = _number(
        url, "pool_timeout", ours.get("pool_timeout", str(DEFAULT_POOL_TIMEOUT)), float
    )
    task_pool_max = int(
        _number(url, "task_pool_max", ours.get("task_pool_max", str(DEFAULT_TASK_POOL_MAX)), int)
    )

    statement_timeout = _seconds(
        url, "statement_timeout", ours.get("statement_timeout", str(DEFAULT_STATEMENT_TIMEOUT))
    )

    vacuum = ours.get("vacuum", "auto")
    if vacuum not in ("auto", "on", "off"):
        raise ConfigurationError(f"vacuum={vacuum!r} in {url!r}: use auto, on or off")

    user = str(params.get("user") or "")
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or user or "?")
    where = f"{user + '@' if user else ''}{host}:{port}/{dbname}"
    return PostgresSettings(
        conninfo=conninfo,
        schema=schema,
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=pool_timeout,
        task_pool_max=task_pool_max,
        vacuum=vacuum,
        where=where,
        libpq_defaults={k: v for k, v in LIBPQ_DEFAULTS.items() if k not in params},
        statement_timeout=statement_timeout,
        libpq_options=str(params.get("options") or ""),
    )
