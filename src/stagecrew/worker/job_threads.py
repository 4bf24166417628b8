"""The threads that run sync tasks, fed from the event loop in batches and answering it in batches.

A `ThreadPoolExecutor` costs each call a concurrent future, its wrapper on the loop, one wake-up
of a thread and one wake-up of the loop (a write to its self-pipe). Under the GIL each wake-up
is also a hand-over of the interpreter between two threads, and a drain of short jobs then
spends more time handing over than running jobs. Here:

- Calls submitted in one turn of the loop are handed over together at the end of that turn
  (`_flush`), and only as many sleeping threads are woken as the calls need: the median
  duration of the recent calls says how many calls one thread gets through in `TICK`, so a
  burst of short calls wakes one thread, which runs them all back to back, and calls that wait
  (for I/O, for a lock) each wake a thread of their own. A median, not a mean: a short call
  that the OS preempted for a few milliseconds must not make the next bursts wake many threads
  to fight over the GIL.
- A thread that finds nothing more to run posts what it finished to the loop in one wake-up.
- While calls wait or outcomes are undelivered, the loop looks every `TICK` (`_tick`): it takes
  the outcomes a busy thread has not posted yet (it went on to its next call), and when a call
  has waited `STUCK_AFTER` (the median misjudged it: a slow call holds its thread) it wakes a
  thread for every waiting call. So a slow call holds fast ones back for a few milliseconds at
  most, and a finished call's outcome never waits behind its thread's next call.

At most `size` threads run, started on demand; they are daemons: a job that will not return
(handed back at shutdown, or overrunning its timeout) never keeps its process from exiting.
"""

from __future__ import annotations

import asyncio
import collections
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .cpu_affinity import spread_over

TICK = 0.001
"""Seconds between the loop's looks at waiting calls and undelivered outcomes, and the time a
woken thread is expected to spend on the calls it was woken for."""

STUCK_AFTER = 0.005
"""Seconds a call may wait before every waiting call gets a thread of its own. Not less than the
interpreter's switch interval (5 ms): a thread that is ready to run may wait that long for the
GIL while the loop is busy, and that is no reason to wake more threads."""

IDLE_AFTER = 0.01
"""Seconds without a call after which the next call wakes its thread at once: it is most
likely a lone job, and nothing else submitted in the same turn would share the wake-up."""

RECENT_CALLS = 15
"""How many of the latest calls' durations the median is taken over."""


class _Call:
    __slots__ = ("fn", "future", "submitted")

    def __init__(self, fn: Callable[[], Any], future: asyncio.Future[Any], submitted: float):
        self.fn = fn
        self.future = future
        self.submitted = submitted


class _Seat:
    """One job thread's place: the thread, and what the loop needs to know of it."""

    __slots__ = ("in_call", "parked", "thread", "wake")

    def __init__(self) -> None:
        self.wake: queue.SimpleQueue[bool] = queue.SimpleQueue()
        """True: look for calls; False: end."""
        self.parked = False
        """Waiting on `wake` (set and cleared under `JobThreads._lock`)."""
        self.in_call = False
        self.thread: threading.Thread | None = None


class JobThreads:
    """Up to `size` threads running calls for one event loop."""

    def __init__(
        self, size: int, *, name: str = "stagecrew-job", spread: frozenset[int] | None = None
    ) -> None:
        """`spread`: the cores every thread but the first may run on (`cpu_affinity`); the
        first, which runs bursts of short calls, stays where its creator is kept."""
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._name = name
        self._spread = spread
        self._pending: collections.deque[_Call] = collections.deque()
        """Submitted and not yet taken by a thread."""
        self._finished: collections.deque[tuple[_Call, Any, BaseException | None]] = (
            collections.deque()
        )
        self._threads: list[_Seat] = []
        self._lock = threading.Lock()
        """Orders a thread's decision to park against the loop's look for parked threads, so
        that a call is never left waiting with every thread asleep."""
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_CALLS)
        """Seconds the latest calls took (appended by the threads; none yet: taken as short)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outstanding = 0
        """Calls submitted and not yet delivered (read and written on the loop only)."""
        self._last_submitted = -math.inf
        self._flush_scheduled = False
        self._tick_armed = False
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
        now = time.monotonic()
        self._pending.append(_Call(fn, future, now))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
            if now - self._last_submitted >= IDLE_AFTER:
                # a call after a quiet spell (a lone job on an idle worker): its thread is
                # woken now rather than at the end of the turn
                with self._lock:
                    if not self._free():
                        self._wake(1)
        self._last_submitted = now
        if not self._tick_armed:
            self._tick_armed = True
            loop.call_later(TICK, self._tick)
        return future

    def shutdown(self, *, wait: bool) -> None:
        """Let every thread end once the calls already submitted are done.

        `wait=True` blocks until they have; `wait=False` returns at once (threads still
        running a call end after it, or with the process).
        """
        self._closed = True
        with self._lock:
            if self._pending:
                self._wake(len(self._pending))
            for seat in self._threads:
                if seat.parked:
                    seat.parked = False
                    seat.wake.put(False)
        if wait:
            for seat in self._threads:
                if seat.thread is not None and seat.thread is not threading.current_thread():
                    seat.thread.join()

    # -- on the event loop ---------------------------------------------------------
    def _flush(self) -> None:
        """Wake as many threads as this turn's calls need, on top of the free ones awake."""
        self._flush_scheduled = False
        pending = len(self._pending)
        if not pending:
            return
        recent = sorted(self._recent)  # a copy first: the threads append meanwhile
        typical = recent[len(recent) // 2] if recent else 0.0
        needed = min(pending, max(1, math.ceil(pending * typical / TICK)))
        with self._lock:
            free = self._free()
            if needed > free:
                self._wake(needed - free)

    def _tick(self) -> None:
        self._tick_armed = False
        if self._finished:
            self._deliver()
        pending = self._pending
        try:
            oldest = pending[0].submitted
        except IndexError:  # none waits (a thread may have taken the last one just now)
            oldest = math.inf
        if time.monotonic() - oldest >= STUCK_AFTER:
            with self._lock:
                self._wake(len(pending))
        if (pending or self._finished) and self._loop is not None and not self._closed:
            self._tick_armed = True
            self._loop.call_later(TICK, self._tick)

    def _free(self) -> int:
        """Threads awake and between calls: they take waiting calls without a wake-up. Call
        with the lock held."""
        return sum(1 for seat in self._threads if not seat.parked and not seat.in_call)

    def _wake(self, count: int) -> None:
        """Wake up to `count` parked threads, starting new ones while below `size`. Call with
        the lock held."""
        for seat in self._threads:
            if count <= 0:
                return
            if seat.parked:
                seat.parked = False
                seat.wake.put(True)
                count -= 1
        while count > 0 and len(self._threads) < self.size:
            seat = _Seat()
            seat.thread = threading.Thread(
                target=self._serve,
                args=(seat,),
                name=f"{self._name}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(seat)
            seat.thread.start()
            count -= 1

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

    # -- on a job thread ---------------------------------------------------------
    def _serve(self, seat: _Seat) -> None:
        if self._spread and seat is not self._threads[0]:
            spread_over(self._spread)
        pending = self._pending
        finished = self._finished
        while True:
            while True:
                try:
                    call = pending.popleft()
                except IndexError:
                    break
                seat.in_call = True
                began = time.monotonic()
                try:
                    result, error = call.fn(), None
                except BaseException as exc:  # delivered to the awaiting coroutine
                    result, error = None, exc
                self._recent.append(time.monotonic() - began)
                seat.in_call = False
                finished.append((call, result, error))
                del call, result, error
            if finished and not self._delivery_scheduled:
                self._delivery_scheduled = True
                self._schedule_delivery()
            with self._lock:
                if pending:
                    continue  # submitted meanwhile: the loop counted this thread as free
                if self._closed:
                    return
                seat.parked = True
            if not seat.wake.get():
                return

    def _schedule_delivery(self) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits for these outcomes any more
            self._finished.clear()
