-- The lock of capped claims, as claim_within_caps (migration 10, called by claim_capped.sql) takes it first: held by another transaction, it makes every capped claim of this store wait.
-- Capped claims count the running jobs only once they hold it, so two of them never count the
-- same free slot and fill it twice. Uncapped claims (claim.sql) never take it. The lock id is
-- the jobs table's name and ':caps', hashed as enqueue_lock_keys.sql hashes its keys (those
-- are ':i:' or ':u:' and a key, never ':caps'); claim_capped.sql computes the same id.
SELECT pg_advisory_xact_lock(hashtextextended({jobs_table} || ':caps', 0))
