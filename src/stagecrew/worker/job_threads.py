"""The threads that run sync tasks, fed from the event loop and answering it in batches.

A `ThreadPoolExecutor` costs each call a concurrent future, its wrapper on the loop, and one
wake-up of the loop (a write to its self-pipe) per finished call. Here long-lived threads take
calls one at a time from one shared queue, so a slow job holds one thread and the fast ones flow
past it on the others, and post what they finished to a list the loop empties in one turn: while
the loop is busy, finished calls pile up behind one scheduled wake-up instead of one each.

Threads start on demand, up to `size`, and are daemons: a job that will not return (handed back
at shutdown, or overrunning its timeout) never keeps its process from exiting.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any


class _Call:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future


_STOP = None


class JobThreads:
    """Up to `size` threads running calls for one event loop."""

    def __init__(self, size: int, *, name: str = "stagecrew-job") -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._finished: collections.deque[tuple[_Call, Any, BaseException | None]] = (
            collections.deque()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._outstanding = 0
        """Calls submitted and not yet delivered (read and written on the loop only)."""
        self._delivery_scheduled = False
        self._closed = False

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `fn()` on a job thread; its result or exception arrives on the returned future.

        Call from the event loop's thread. Cancelling the future does not stop the call (a
        thread cannot be interrupted); its outcome is then dropped.
        """
        if self._closed:
            raise RuntimeError("the job threads are shut down")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("job threads serve one event loop")
        future: asyncio.Future[Any] = loop.create_future()
        self._outstanding += 1
        self._calls.put(_Call(fn, future))
        if self._outstanding > len(self._threads) < self.size:
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return future

    def shutdown(self, *, wait: bool) -> None:
        """Let every thread end once the calls already submitted are done.

        `wait=True` blocks until they have; `wait=False` returns at once (threads still
        running a call end after it, or with the process).
        """
        self._closed = True
        for _ in self._threads:
            self._calls.put(_STOP)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    # -- on a job thread ---------------------------------------------------------
    def _serve(self) -> None:
        calls = self._calls
        while True:
            call = calls.get()
            if call is _STOP:
                return
            try:
                result, error = call.fn(), None
            except BaseException as exc:  # delivered to the awaiting coroutine
                result, error = None, exc
            self._finished.append((call, result, error))
            del call, result, error
            if not self._delivery_scheduled:
                self._delivery_scheduled = True
                self._schedule_delivery()

    def _schedule_delivery(self) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits for these outcomes any more
            self._finished.clear()

    # -- on the event loop ---------------------------------------------------------
    def _deliver(self) -> None:
        """Hand every finished call's outcome to its future, in one loop turn.

        The flag is lowered before the list is emptied: a call finished after that either is
        taken by this turn or schedules the next one, so none is left behind.
        """
        self._delivery_scheduled = False
        finished = self._finished
        while finished:
            call, result, error = finished.popleft()
            self._outstanding -= 1
            future = call.future
            if future.done():  # cancelled while it ran
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
