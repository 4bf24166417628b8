"""The tasks chaos workers run: they write the ledger, sleep, and (one of them) crash.

Worker processes import `stagecrew.chaos.tasks:app`; its store comes from
`STAGECREW_URL` and its ledger file from `STAGECREW_CHAOS_LEDGER`, both set by
the scenario runner. Every task is on the `stagecrew-chaos` queue, so chaos
workers never take a real deployment's jobs, and the deployment's workers
(which serve their own queues) never take these.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ..app import App
from ..backends.base import DEFAULT_MAX_LOST
from ..context import Context
from ..testing.ledger import Ledger

QUEUE = "stagecrew-chaos"
APP_REF = "stagecrew.chaos.tasks:app"
LEDGER_ENV = "STAGECREW_CHAOS_LEDGER"
MAX_LOSSES_ENV = "STAGECREW_CHAOS_MAX_WORKER_LOSSES"
WORK = "stagecrew_chaos_work"
AWORK = "stagecrew_chaos_awork"
CRASH = "stagecrew_chaos_crash"
CRASH_EXIT_CODE = 9


def _ledger() -> Ledger:
    path = os.environ.get(LEDGER_ENV)
    if not path:
        raise RuntimeError(f"{LEDGER_ENV} is not set: chaos tasks need a ledger file")
    return Ledger(path)


def create_app(url: str | None = None, max_worker_losses: int | None = None) -> App:
    """The chaos app on `url` (else `STAGECREW_URL`), every task on the chaos queue.

    `max_worker_losses` (else `STAGECREW_CHAOS_MAX_WORKER_LOSSES`, else the App
    default) is how many lost workers a job survives before it goes dead.
    """
    if max_worker_losses is None:
        max_worker_losses = int(os.environ.get(MAX_LOSSES_ENV, DEFAULT_MAX_LOST))
    app = App(url, default_queue=QUEUE, max_worker_losses=max_worker_losses)

    @app.task(name=WORK, max_attempts=20)
    def work(seconds: float, ctx: Context) -> dict[str, Any]:
        ledger = _ledger()
        ledger.record("start", ctx.job_id, ctx.attempt)
        time.sleep(seconds)
        ledger.record("end", ctx.job_id, ctx.attempt)
        return {"pid": os.getpid(), "attempt": ctx.attempt}

    @app.task(name=AWORK, max_attempts=20)
    async def awork(seconds: float, ctx: Context) -> dict[str, Any]:
        ledger = _ledger()
        ledger.record("start", ctx.job_id, ctx.attempt)
        await asyncio.sleep(seconds)
        ledger.record("end", ctx.job_id, ctx.attempt)
        return {"pid": os.getpid(), "attempt": ctx.attempt}

    @app.task(name=CRASH, max_attempts=10)
    def crash(ctx: Context) -> None:
        """A poison job: it kills the worker process running it, every time."""
        _ledger().record("start", ctx.job_id, ctx.attempt)
        os._exit(CRASH_EXIT_CODE)

    return app


app = create_app()
