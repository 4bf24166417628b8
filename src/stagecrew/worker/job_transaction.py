"""`ctx.transaction()`: a task's own writes and its job's success, committed as one.

The block's connection is in an open transaction. When the block ends
normally, the job's fenced COMPLETE runs on that same connection, last, and
only then does the transaction commit; so the writes and the success are
stored together or not at all. A block that raises rolls everything back and
the attempt fails as usual. If the attempt was cancelled meanwhile (on
request, on timeout or at shutdown) the transaction is rolled back and
`JobCancelledError` is raised out of the block; if it lost its lease (the job was
rescued, handed back or re-run, and belongs to another claim), it is rolled
back and `LeaseLostError` is raised. The COMPLETE is fenced on the claim's
token like every other write of the attempt.

The checkpoint and progress still pending (rate-limited, `steps.py`) are written
just before the COMPLETE, on the worker's own connection as usual: once the
success commits, the store refuses them. After the commit the attempt takes no
more of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..backends.base import Backend
from ..errors import LeaseLostError, StagecrewError
from ..job import JobRef

if TYPE_CHECKING:
    from ..context import Context
    from .steps import AttemptSteps


class JobTransaction:
    """Use once per attempt, as `with` in a sync task or `async with` in an async one."""

    def __init__(
        self,
        backend: Backend,
        ref: JobRef,
        ctx: Context,
        steps: AttemptSteps,
        on_committed: Callable[[], None],
    ) -> None:
        self._backend = backend
        self._ref = ref
        self._ctx = ctx
        self._steps = steps
        self._on_committed = on_committed
        self._entered = False
        self._sync: contextlib.AbstractContextManager[Any] | None = None
        self._async: contextlib.AbstractAsyncContextManager[Any] | None = None

    def _enter_once(self) -> None:
        if self._entered:
            raise StagecrewError(
                f"job {self._ref.id}: ctx.transaction() can be entered once per attempt, "
                "since its commit marks the job succeeded"
            )
        self._entered = True

    def _lost(self) -> LeaseLostError:
        return LeaseLostError(
            f"job {self._ref.id} claim {self._ref.token} lost its lease before its "
            "transaction committed; the transaction was rolled back"
        )

    @contextlib.contextmanager
    def _run(self) -> Iterator[Any]:
        with self._backend.transaction() as conn:
            yield conn
            self._ctx.checkpoint()
            self._steps.flush()
            if not self._backend.complete_in(conn, self._ref, None):
                raise self._lost()
        self._committed()

    @contextlib.asynccontextmanager
    async def _run_async(self) -> AsyncIterator[Any]:
        async with self._backend.transaction_async() as conn:
            yield conn
            self._ctx.checkpoint()
            await self._steps.flush_async()
            if not await self._backend.complete_in_async(conn, self._ref, None):
                raise self._lost()
        self._committed()

    def _committed(self) -> None:
        self._steps.committed()
        self._on_committed()

    def __enter__(self) -> Any:
        self._enter_once()
        self._sync = self._run()
        return self._sync.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._sync is not None
        return self._sync.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Any:
        self._enter_once()
        self._async = self._run_async()
        return await self._async.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._async is not None
        return await self._async.__aexit__(exc_type, exc, tb)
