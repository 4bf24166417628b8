"""The wake-up subscription behind `wait`: classic pub/sub on each queue's T:wake channel.

Scripts that make work due publish on T:wake (see keys.py). Each event loop keeps one
subscription (messages published while a worker was busy wait in the socket, so none is
missed); a wait returns on a message or after its timeout. After a Redis restart the
subscription is made again, with backoff, and the first wait after any (re)subscription
returns at once, so that the caller claims again rather than trust a subscription that may
have missed a message. A Cluster forwards pub/sub to every node: the node in the URL serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

log = logging.getLogger("stagecrew.redis")

WAIT_ERROR_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Pauses after failures in a row, so that a worker neither spins nor dies while Redis restarts."""


class Subscription:
    """One event loop's subscription; concurrent waits on that loop take turns reading it."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.pubsub: Any = None
        self.channels: frozenset[str] = frozenset()
        self.listening = asyncio.Lock()
        self.failures = 0

    async def wait(self, channels: frozenset[str], timeout: float) -> None:
        """Block until a message on one of `channels`, a fresh subscription, or `timeout`.

        A message published while nobody waited counts too. Connection errors drop the
        subscription and pause with backoff (within the timeout).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not channels:
            await asyncio.sleep(timeout)
            return
        try:
            # One reader per subscription: concurrent waits on one loop take turns.
            await asyncio.wait_for(self.listening.acquire(), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            return
        try:
            await self._listen(channels, deadline)
        except (RedisError, OSError) as exc:
            await self.reset()
            delay = WAIT_ERROR_DELAYS[min(self.failures, len(WAIT_ERROR_DELAYS) - 1)]
            self.failures += 1
            log.debug("wake-up subscription failed (%s); retrying in %.2fs", exc, delay)
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
        finally:
            self.listening.release()

    async def _listen(self, channels: frozenset[str], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if await self._subscribe(channels, deadline):
            self.failures = 0
            return
        pubsub = self.pubsub
        while True:
            remaining = deadline - loop.time()
            message = await pubsub.get_message(timeout=max(remaining, 0.0))
            if message is not None and message["type"] == "message":
                for _ in range(1000):  # drop the other buffered wake-ups: one claim serves all
                    if await pubsub.get_message(timeout=0.0) is None:
                        break
                break
            if remaining <= 0:
                break
        self.failures = 0

    async def _subscribe(self, channels: frozenset[str], deadline: float) -> bool:
        """Listen on exactly `channels`; True when a channel was newly subscribed."""
        if self.pubsub is not None and self.channels == channels:
            return False
        if self.pubsub is None:
            self.pubsub = self.client.pubsub()
        stale, new = self.channels - channels, channels - self.channels
        if stale:
            await self.pubsub.unsubscribe(*stale)
            self.channels = self.channels - stale
        if not new:
            return False
        await self.pubsub.subscribe(*new)
        self.channels = channels
        # Wait for Redis to confirm, so that a claim that follows runs after the subscription.
        loop = asyncio.get_running_loop()
        confirmed = 0
        while confirmed < len(new):
            remaining = deadline - loop.time()
            message = await self.pubsub.get_message(timeout=max(remaining, 0.01))
            if message is None:
                if remaining <= 0:
                    break
                continue
            if message["type"] == "subscribe":
                confirmed += 1
        return True

    async def reset(self) -> None:
        pubsub, self.pubsub, self.channels = self.pubsub, None, frozenset()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        await self.reset()
        with contextlib.suppress(Exception):
            await self.client.aclose()
