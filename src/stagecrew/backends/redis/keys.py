"""Store URLs and the key layout (documented at the top of `backend.py`)."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError

DEFAULT_PREFIX = "stagecrew"
TIMEOUT_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 10.0,  # seconds a command may wait for its reply
    "socket_connect_timeout": 5.0,  # seconds to open a connection
    "health_check_interval": 30,  # seconds idle before a connection is PINGed before use
    "socket_keepalive": True,
}
"""redis-py options stagecrew sets on every connection; the URL's own (same names) win."""
KEEPALIVE_DEFAULTS = {"keepalive_idle": 10, "keepalive_interval": 5, "keepalive_count": 3}
"""TCP keepalive timing (seconds idle, seconds between probes, probes): a dead peer of an idle
connection is noticed in about 25 s. stagecrew's own URL options, as redis-py has none."""
_KEEPALIVE_SOCKET_OPTIONS = {
    "keepalive_idle": getattr(socket, "TCP_KEEPIDLE", None),
    "keepalive_interval": getattr(socket, "TCP_KEEPINTVL", None),
    "keepalive_count": getattr(socket, "TCP_KEEPCNT", None),
}
_OUR_QUERY = frozenset(
    {"prefix", "allow_eviction", "cluster", "cluster_layout", *KEEPALIVE_DEFAULTS}
)
_SECONDS_QUERY = {"socket_timeout": 0.0, "socket_connect_timeout": 0.0, "health_check_interval": -1}
"""redis-py's time options in a URL, checked here (finite, above the bound) before redis-py
reads them: a NaN or infinite socket timeout would make every call wait for ever."""
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str
    """The URL without stagecrew's own query parameters, as redis-py reads it."""
    display_url: str
    """The URL without its password, for messages."""
    prefix: str
    allow_eviction: bool
    cluster: bool
    """Talk to a Redis Cluster (`?cluster=1`): redis-py's cluster clients route by slot."""
    cluster_layout: bool
    """Keep the idempotency index per queue and reserve ids before enqueueing (implied by
    `cluster`; `?cluster_layout=1` alone runs that layout on a single Redis, for tests)."""
    connection_options: dict[str, Any] = field(default_factory=dict)
    """Timeouts and keepalives for redis-py's connections (the URL's own settings win)."""


def parse_url(url: str) -> Settings:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a Redis URL: {url!r}; use redis://host:6379/0")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OUR_QUERY:
            ours[name] = value
        else:
            if name in _SECONDS_QUERY:
                _check_seconds(url, name, value, above=_SECONDS_QUERY[name])
            theirs.append((name, value))
    prefix = ours.get("prefix", DEFAULT_PREFIX)
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"bad key prefix {prefix!r} in {url!r}: use a non-empty name without braces, "
            "e.g. ?prefix=myapp"
        )
    redis_url = urlunsplit(parts._replace(query=urlencode(theirs)))
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    display = urlunsplit(parts._replace(netloc=netloc))
    keepalive: dict[int, int] = {}
    for name, default in KEEPALIVE_DEFAULTS.items():
        given = ours.get(name, str(default))
        seconds = _check_seconds(url, name, given, above=0)
        if seconds != int(seconds):
            raise ConfigurationError(f"option {name}={given!r} in {url!r} must be whole seconds")
        option = _KEEPALIVE_SOCKET_OPTIONS[name]
        if option is not None:  # not every platform can tune keepalives per socket
            keepalive[option] = int(seconds)
    return Settings(
        redis_url=redis_url,
        display_url=display,
        prefix=prefix,
        allow_eviction=ours.get("allow_eviction", "").lower() in _TRUE,
        cluster=ours.get("cluster", "").lower() in _TRUE,
        cluster_layout=(ours.get("cluster_layout") or ours.get("cluster", "")).lower() in _TRUE,
        connection_options={**TIMEOUT_DEFAULTS, "socket_keepalive_options": keepalive},
    )


def _check_seconds(url: str, name: str, value: str, *, above: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"option {name}={value!r} in {url!r} is not a number") from None
    if not above < seconds < math.inf:  # false for NaN
        bound = "0 or more" if above < 0 else "more than 0"
        raise ConfigurationError(
            f"option {name}={value!r} in {url!r} must be a finite number of seconds, {bound}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class QueueKeys:
    name: str
    tag: str
    keys: tuple[str, ...]
    """The eleven KEYS every script receives (see `lua/_lib.lua`)."""
    registered: str
    wake: str

    def job(self, job_id: int | str) -> str:
        return f"{self.tag}:job:{job_id}"


class Keys:
    def __init__(self, prefix: str, *, per_queue_globals: bool) -> None:
        self.prefix = prefix
        self.ids = f"{{{prefix}}}:ids"
        self.queues = f"{{{prefix}}}:queues"
        self.idempotency = f"{{{prefix}}}:idempotency"
        self.layout = f"{{{prefix}}}:layout"
        self._per_queue_globals = per_queue_globals
        self._queues: dict[str, QueueKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        found = self._queues.get(name)
        if found is None:
            tag = "{" + self.prefix + ":" + quote(name, safe="") + "}"
            if self._per_queue_globals:
                idempotency, ids = f"{tag}:idempotency", f"{tag}:ids"
            else:
                idempotency, ids = self.idempotency, self.ids
            keys = (
                f"{tag}:available",
                f"{tag}:scheduled",
                f"{tag}:running",
                f"{tag}:succeeded",
                f"{tag}:dead",
                f"{tag}:cancelled",
                f"{tag}:all",
                idempotency,
                f"{tag}:registered",
                f"{tag}:due",
                ids,
            )
            found = QueueKeys(name, tag, keys, keys[8], f"{tag}:wake")
            if len(self._queues) < 10_000:
                self._queues[name] = found
        return found
