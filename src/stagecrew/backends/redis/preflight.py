"""Checks of the Redis deployment: server version, key layout, persistence and eviction.

What a Redis crash loses depends on its persistence: with `appendonly yes` and
`appendfsync always`, nothing acknowledged; with `appendfsync everysec` (Redis' default for
AOF), up to about one second of writes; with RDB snapshots only, everything since the last
snapshot; with no persistence, everything. A lost enqueue means a lost job, a lost ack means
the job runs again. `deployment_warnings` says which at worker start, and refuses an eviction
policy that may evict job keys. Every function here lets redis-py's errors through: the engine
reports them in its own terms.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError

from ...errors import BackendError, ConfigurationError, SchemaOutOfDateError
from .keys import Keys, Settings
from .records import text

log = logging.getLogger("stagecrew.redis")

LAYOUT_VERSION = 1
MIN_REDIS_VERSION = (7, 0)
"""Script flags (`#!lua` lines) need Redis 7."""


def _version(number: str) -> tuple[int, ...]:
    return tuple(int(p) for p in number.split(".")[:2] if p.isdigit())


def nodes(client: Any, settings: Settings) -> list[redis.Redis]:
    """A client per server to check: the one Redis, or every primary of a Cluster."""
    if not settings.cluster:
        return [client]
    return [n.redis_connection for n in client.get_primaries()]


def record_layout(client: Any, keys: Keys, settings: Settings) -> bool:
    """Record the key layout version in a new store, and check the one stored; True if
    this call recorded it (the store was new)."""
    recorded = bool(client.set(keys.layout, str(LAYOUT_VERSION), nx=True))
    check_layout(client.get(keys.layout), settings)
    return recorded


def check_store(client: Any, keys: Keys, settings: Settings) -> None:
    """The Redis version of every node, and the key layout (recorded in a new store).

    An unreachable Redis is left for later: the operations report it in their own terms.
    """
    try:
        versions = [
            text(n.info("server").get("redis_version", "0")) for n in nodes(client, settings)
        ]
        client.set(keys.layout, str(LAYOUT_VERSION), nx=True)
        stored = client.get(keys.layout)
    except RedisError as exc:
        log.debug("could not check the Redis store yet: %s", exc)
        return
    for version in versions:
        if _version(version) < MIN_REDIS_VERSION:
            raise ConfigurationError(
                f"Redis at {settings.display_url} is version {version}; stagecrew "
                "needs Redis 7.0 or newer (its scripts use Redis 7 script flags)"
            )
    check_layout(stored, settings)


def check_layout(stored: Any, settings: Settings) -> None:
    version = int(stored or 0)
    if version > LAYOUT_VERSION:
        raise BackendError(
            f"the Redis store at {settings.display_url} (prefix {settings.prefix!r}) has "
            f"key layout {version}, newer than this stagecrew knows ({LAYOUT_VERSION}); "
            "upgrade stagecrew on this machine"
        )
    if version < LAYOUT_VERSION:
        raise SchemaOutOfDateError(
            f"the Redis store at {settings.display_url} has key layout {version}; "
            f"run `stagecrew migrate` to upgrade it to {LAYOUT_VERSION}"
        )


def deployment_warnings(client: Any, settings: Settings) -> list[str]:
    """Persistence and eviction settings of every node, read at worker start.

    Raises `ConfigurationError` for an eviction policy that may evict job keys (any
    `allkeys-*` policy) unless the URL says `?allow_eviction=1`. `volatile-*` policies are
    accepted: they evict only keys with a TTL, and stagecrew never sets one. Warns when Redis
    persists nothing, or only RDB snapshots. Where CONFIG is disabled (managed Redis), falls
    back to INFO and says what it could not check.
    """
    warnings: list[str] = []
    for node in nodes(client, settings):
        for warning in _node_warnings(node, settings):
            if warning not in warnings:
                warnings.append(warning)
    return warnings


def _node_warnings(node: redis.Redis, settings: Settings) -> list[str]:
    where = settings.display_url
    if settings.cluster:
        kwargs = node.connection_pool.connection_kwargs
        where = f"{where} (node {kwargs.get('host')}:{kwargs.get('port')})"
    warnings: list[str] = []
    found: dict[str, str] = {}
    try:
        raw = node.config_get("appendonly", "appendfsync", "save", "maxmemory-policy")
        found = {text(k): text(v) for k, v in raw.items()}
    except ResponseError as exc:
        warnings.append(
            f"Redis at {where} does not allow CONFIG GET ({exc}); read INFO instead: "
            "RDB snapshot rules and appendfsync could not be checked"
        )
        info = node.info("persistence")
        memory = node.info("memory")
        found["appendonly"] = "yes" if int(info.get("aof_enabled", 0)) else "no"
        found["maxmemory-policy"] = text(memory.get("maxmemory_policy", "unknown"))
    server = node.info("server")
    version = text(server.get("redis_version", "0"))
    if _version(version) < MIN_REDIS_VERSION:
        raise ConfigurationError(
            f"Redis at {where} is version {version}; stagecrew needs Redis 7.0 or newer"
        )
    policy = found.get("maxmemory-policy", "unknown")
    if policy != "noeviction" and not policy.startswith("volatile-"):
        message = (
            f"Redis at {where} uses maxmemory-policy {policy!r}, which may evict stagecrew's "
            "job keys when memory runs short: jobs would vanish without a trace"
        )
        if not settings.allow_eviction:
            raise ConfigurationError(
                f"{message}. Set `maxmemory-policy noeviction` (or a volatile-* policy: "
                "stagecrew never sets a TTL on its keys), or add ?allow_eviction=1 to the "
                "store URL to accept the risk."
            )
        warnings.append(f"{message} (allowed by allow_eviction=1)")
    aof = found.get("appendonly") == "yes"
    save = found.get("save")
    if aof:
        if found.get("appendfsync") == "no":
            warnings.append(
                f"Redis at {where} writes its append-only file without fsync "
                "(appendfsync no): a crash of the machine may lose the last ~30 s of jobs "
                "and outcomes"
            )
    elif save == "":
        warnings.append(
            f"!!! Redis at {where} persists NOTHING (appendonly no, no RDB snapshots): a "
            "Redis restart loses every job, queued or running. Turn on "
            "`appendonly yes` (with appendfsync everysec or always) for durable jobs."
        )
    elif save is not None:
        warnings.append(
            f"Redis at {where} persists RDB snapshots only (save {save!r}): a crash loses "
            "every job enqueued and every outcome recorded since the last snapshot. Turn "
            "on `appendonly yes` for durable jobs."
        )
    return warnings
