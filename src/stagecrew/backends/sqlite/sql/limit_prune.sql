-- Delete up to :limit limit records expired at :now.
DELETE FROM stagecrew_limit_states
WHERE name IN (
    SELECT name FROM stagecrew_limit_states WHERE expires_at <= :now LIMIT :limit
)
