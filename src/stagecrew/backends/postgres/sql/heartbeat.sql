-- Extend the leases %(worker)s still holds (same claim token, still running) to now + %(lease_seconds)s; report pending cancels.
-- Ids are sorted, each at most once per statement; rows are found by index ("id = ANY"), and
-- each finds its token by binary search over the ids, with no join (see ack.sql).
WITH clock AS (
    SELECT {schema}.store_now(%(now)s) AS now
)
UPDATE {schema}.jobs AS j
SET lease_expires_at = clock.now + %(lease_seconds)s
FROM clock
WHERE j.id = ANY(%(ids)b::bigint[])
  AND j.claims = (%(tokens)b::integer[])[width_bucket(j.id, %(ids)b::bigint[])]
  AND j.state = 'running'
  AND j.lease_owner = %(worker)s
RETURNING j.id, j.claims, j.cancel_requested
