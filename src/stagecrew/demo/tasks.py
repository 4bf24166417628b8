"""The demo's tasks: thumbnails (CPU), flaky webhooks (retries), reports (async), bad input.

The worker processes import `stagecrew.demo.tasks:app`, whose store is taken
from `STAGECREW_URL`; `stagecrew demo` sets it before starting them, so the
producer and every worker share one database. Every outcome that looks random
is derived from the job's id, attempt or seed, so two runs on a fresh store
behave the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from ..app import App
from ..context import Context
from .images import downscale, encode_png, render

THUMBNAIL_SCALE = 4
WEBHOOK_FAILURE_PERCENT = {1: 30, 2: 10}
"""Share of attempts that fail, by attempt number; later attempts always succeed."""


class MalformedRecordError(ValueError):
    """The record itself is wrong: running it again cannot help, so it is not retried."""


def thumbnail(seed: int, out_dir: str, size: int = 32) -> dict[str, Any]:
    """Render a picture from `seed`, shrink it to `size` pixels wide, write it as a PNG."""
    source = render(seed, size * THUMBNAIL_SCALE, size * THUMBNAIL_SCALE * 3 // 4)
    data = encode_png(downscale(source, THUMBNAIL_SCALE))
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"thumb-{seed:05d}.png"
    partial = folder / f".{path.name}.{os.getpid()}-{threading.get_ident()}.part"
    partial.write_bytes(data)
    partial.replace(path)  # readers (and a second attempt) only ever see a whole file
    return {
        "path": str(path),
        "width": size,
        "height": size * 3 // 4,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _fails(job_id: int, attempt: int) -> bool:
    percent = WEBHOOK_FAILURE_PERCENT.get(attempt, 0)
    return zlib.crc32(f"{job_id}:{attempt}".encode()) % 100 < percent


def webhook(endpoint: str, event_id: int, ctx: Context) -> dict[str, Any]:
    """Deliver an event to a partner endpoint that drops some connections."""
    time.sleep(0.01 + (event_id % 4) * 0.01)
    if _fails(ctx.job_id, ctx.attempt):
        raise ConnectionError(f"{endpoint}: connection reset by peer (simulated)")
    return {"endpoint": endpoint, "event_id": event_id, "status": 200, "attempt": ctx.attempt}


async def report(account: int, days: int = 30) -> dict[str, Any]:
    """Aggregate an account's daily revenue after a short (simulated) database read."""
    await asyncio.sleep(0.05 + (account % 5) * 0.03)
    rng = random.Random(account)
    daily = [round(rng.uniform(50.0, 500.0), 2) for _ in range(days)]
    ranked = sorted(daily)
    return {
        "account": account,
        "days": days,
        "total": round(sum(daily), 2),
        "mean": round(sum(daily) / days, 2),
        "median": ranked[days // 2],
        "best_day": daily.index(ranked[-1]) + 1,
        "worst_day": daily.index(ranked[0]) + 1,
    }


def import_contact(record: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a contact record; a malformed one goes to the dead-letter queue."""
    missing = [name for name in ("name", "email") if not record.get(name)]
    if missing:
        raise MalformedRecordError(f"contact record is missing {', '.join(missing)}: {record}")
    email = str(record["email"]).strip().lower()
    if "@" not in email:
        raise MalformedRecordError(f"contact record has an invalid email {email!r}")
    return {"name": str(record["name"]).strip(), "email": email}


def create_app(url: str | None = None) -> App:
    """The demo app on `url` (default: `STAGECREW_URL`, as every `App`).

    Its job of a task no worker has waits a second, not the default hour, for a
    worker that has it, so that the demo shows it dead-lettered before it ends.
    """
    app = App(url, unknown_task_window=1.0)
    app.task(queue="images", max_attempts=3, timeout=30)(thumbnail)
    app.task(
        queue="webhooks",
        max_attempts=5,
        retry_on=(ConnectionError,),
        backoff={"base": 0.05, "factor": 2.0, "cap": 1.0},
    )(webhook)
    app.task(queue="reports", max_attempts=3, timeout=10)(report)
    app.task(max_attempts=5, dont_retry_on=(MalformedRecordError,))(import_contact)
    return app


app = create_app()
