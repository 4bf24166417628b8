"""Store URLs and the key layout (documented at the top of `backend.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError

DEFAULT_PREFIX = "stagecrew"
_OUR_QUERY = frozenset({"prefix", "allow_eviction", "cluster", "cluster_layout"})
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
    return Settings(
        redis_url=redis_url,
        display_url=display,
        prefix=prefix,
        allow_eviction=ours.get("allow_eviction", "").lower() in _TRUE,
        cluster=ours.get("cluster", "").lower() in _TRUE,
        cluster_layout=(ours.get("cluster_layout") or ours.get("cluster", "")).lower() in _TRUE,
    )


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
