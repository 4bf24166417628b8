"""Returns jobs whose worker stopped renewing its lease (it died) to the queue."""

from __future__ import annotations

import logging

from ..backends.base import Backend, RescueReport

log = logging.getLogger("stagecrew.maintenance")


async def rescue_expired(backend: Backend, max_lost: int) -> RescueReport:
    report = await backend.rescue_async(max_lost)
    if report.total:
        log.warning(
            "rescued %d jobs from lost workers: %d requeued, %d dead (worker lost too often), "
            "%d cancelled",
            report.total,
            report.requeued,
            report.dead,
            report.cancelled,
        )
    return report
