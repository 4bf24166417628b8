-- Serialise the capped claims of this store until this transaction ends (taken first, as its own statement).
-- Capped claims run under READ COMMITTED, each statement on a snapshot of its own start: the
-- running jobs are counted (claim_running.sql) in the statement after this one, so they include
-- every job a capped claim that held the lock before took and committed. Without the lock two
-- capped claims could count the same free slot and fill it twice. Uncapped claims (claim.sql)
-- never take it. The lock id is the jobs table's name and ':caps', hashed as enqueue_lock_keys.sql
-- hashes its keys (those are ':i:' or ':u:' and a key, never ':caps').
SELECT pg_advisory_xact_lock(hashtextextended({jobs_table} || ':caps', 0))
