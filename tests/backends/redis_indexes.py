"""The Redis key layout checked against the interleaving model after every step.

Each job is in exactly the index its state needs, no index holds a job that is not
in that state, a running job's score is its lease, and a deleted job leaves no hash
(see `stagecrew.backends.redis.keys`).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from stagecrew.backends.base import Backend
from stagecrew.backends.redis.keys import Keys, parse_url
from stagecrew.job import JobState
from stagecrew.testing.conformance.interleaving import ExpectedJob

S = JobState


class RedisIndexes:
    """Checks the Redis key layout (see `stagecrew.backends.redis.keys`) against the model."""

    STATE_INDEXES = ("available", "scheduled", "due", "running", "succeeded", "dead", "cancelled")
    NEEDED = {
        S.AVAILABLE: {"available"},
        S.SCHEDULED: {"scheduled", "due"},  # T:due holds scheduled jobs whose run_at passed
        S.RUNNING: {"running"},
        S.SUCCEEDED: {"succeeded"},
        S.DEAD: {"dead"},
        S.CANCELLED: {"cancelled"},
    }

    def __init__(self) -> None:
        self.clients: dict[str, redis.Redis] = {}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def __call__(
        self,
        backend: Backend,
        expected: Mapping[int, ExpectedJob],
        removed: Mapping[int, ExpectedJob],
    ) -> None:
        settings = parse_url(backend.url)
        client = self.clients.get(settings.redis_url)
        if client is None:
            client = self.clients[settings.redis_url] = redis.Redis.from_url(settings.redis_url)
        keys = Keys(settings.prefix, per_queue_globals=settings.cluster_layout)
        queues = {q.decode() for q in client.smembers(keys.queues)}
        assert {job.queue for job in expected.values()} <= queues, "a queue is not registered"
        for queue in sorted(queues):
            self.check_queue(client, keys, queue, expected, removed)

    def check_queue(
        self,
        client: redis.Redis,
        keys: Keys,
        queue: str,
        expected: Mapping[int, ExpectedJob],
        removed: Mapping[int, ExpectedJob],
    ) -> None:
        k = keys.queue(queue)
        by_name = dict(zip(("available", "scheduled", "running"), k.keys[:3], strict=True))
        by_name |= {"succeeded": k.keys[3], "dead": k.keys[4], "cancelled": k.keys[5]}
        by_name |= {"due": k.keys[9], "all": k.keys[6]}
        pipe = client.pipeline(transaction=True)
        for name in (*self.STATE_INDEXES, "all"):
            pipe.zrange(by_name[name], 0, -1, withscores=True)
        gone = [job_id for job_id, job in removed.items() if job.queue == queue]
        for job_id in gone:
            pipe.exists(k.job(job_id))
        replies = pipe.execute()
        indexes: dict[str, dict[int, float]] = {}
        names = (*self.STATE_INDEXES, "all")
        for name, members in zip(names, replies[: len(names)], strict=True):
            # an available member is "<order time µs, 17 digits>:<length of the id><id>"
            indexes[name] = {
                int(m[19:] if name in ("available", "due") else m): score for m, score in members
            }
        leftover = [
            job_id for job_id, exists in zip(gone, replies[len(names) :], strict=True) if exists
        ]
        assert not leftover, f"queue {queue}: jobs {leftover} were deleted but their hash remains"
        mine = {job_id: job for job_id, job in expected.items() if job.queue == queue}
        assert set(indexes["all"]) == set(mine), (
            f"queue {queue}: T:all holds {sorted(indexes['all'])}, the queue has {sorted(mine)}"
        )
        for job_id in sorted(set(mine) | {i for n in self.STATE_INDEXES for i in indexes[n]}):
            found = {name for name in self.STATE_INDEXES if job_id in indexes[name]}
            job = mine.get(job_id)
            assert job is not None, f"queue {queue}: job {job_id} is not in it but in {found}"
            assert len(found) == 1 and found <= self.NEEDED[job.state], (
                f"queue {queue}: job {job_id} is {job.state} but in the indexes {sorted(found)}"
            )
            if job.state is S.RUNNING:
                assert job.lease_until is not None
                assert abs(indexes["running"][job_id] - job.lease_until) < 1e-3, (
                    f"job {job_id}: T:running scores it {indexes['running'][job_id]}, "
                    f"its lease ends at {job.lease_until}"
                )
