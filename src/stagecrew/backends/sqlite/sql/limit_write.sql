-- Store one record of a swap the compare-and-set let through, over any record of that name, live or expired (run under the write lock, after the read).
INSERT INTO stagecrew_limit_states (name, version, value, expires_at)
VALUES (:name, :version, :value, :expires_at)
ON CONFLICT (name) DO UPDATE SET
    version = excluded.version,
    value = excluded.value,
    expires_at = excluded.expires_at
