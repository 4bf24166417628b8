-- Delete up to :limit finished jobs that finished before their state's horizon (NULL keeps them).
DELETE FROM stagecrew_jobs
WHERE id IN (
    SELECT id FROM stagecrew_jobs WHERE state = 'succeeded' AND finished_at < :succeeded_before
    UNION ALL
    SELECT id FROM stagecrew_jobs WHERE state = 'cancelled' AND finished_at < :cancelled_before
    UNION ALL
    SELECT id FROM stagecrew_jobs WHERE state = 'dead' AND finished_at < :dead_before
    LIMIT :limit
)
