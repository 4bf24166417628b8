"""The PostgreSQL store URL: libpq's own URI, plus a few stagecrew options in its query string.

    postgresql://user:secret@db.example.com:5432/app?schema=jobs&pool_max=8&sslmode=require

stagecrew's options are removed before the URI reaches libpq; every other
query parameter (sslmode, connect_timeout, application_name, ...) is libpq's.
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
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1

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
    connect_timeout_set: bool
    """The URL sets libpq's connect_timeout itself."""

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema's jobs; the payload is a queue name."""
        name = f"stagecrew:{self.schema}"
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:  # PostgreSQL would reject it
            digest = hashlib.blake2b(self.schema.encode(), digest_size=12).hexdigest()
            name = f"stagecrew:{digest}"
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
        connect_timeout_set="connect_timeout" in params,
    )
