-- Delete up to :limit worker records last seen at or before :horizon.
DELETE FROM stagecrew_workers
WHERE id IN (
    SELECT id FROM stagecrew_workers WHERE seen_at <= :horizon LIMIT :limit
)
