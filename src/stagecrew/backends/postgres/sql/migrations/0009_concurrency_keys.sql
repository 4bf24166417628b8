-- Schema version 9: concurrency keys (backends/caps.py): the key whose running jobs a per-key cap counts.

-- NULL on every existing row (no per-key cap applies to them): adding it rewrites nothing.
-- No index comes with it: a capped claim counts the running jobs with a live lease, a range of
-- jobs_lease (only running jobs hold a lease), and reads its candidates off jobs_claim. An index
-- over the running jobs by task, queue or key would cost every claim and every heartbeat of
-- every job one more index entry, to speed up a count over a set the fleet's slots bound.
ALTER TABLE {schema}.jobs ADD COLUMN concurrency_key text;
