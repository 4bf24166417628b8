-- Schema version 9: concurrency keys (backends/caps.py): the key whose running jobs a per-key cap counts.

-- NULL: no per-key cap applies to the job (every job written before this version). A capped
-- claim counts the running jobs with a live lease off stagecrew_jobs_lease and reads its
-- candidates off stagecrew_jobs_claim, so the key needs no index of its own: each index
-- entry the claim visits is one row read, whose task and key it checks.
ALTER TABLE stagecrew_jobs ADD COLUMN concurrency_key TEXT;
