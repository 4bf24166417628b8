-- Replace job %(id)s's checkpoint while claim %(token)s holds it running (fenced as store_step.sql). Returns a row if the fence held.
WITH held AS (
    SELECT id FROM {schema}.jobs
    WHERE id = %(id)s AND claims = %(token)s AND state = 'running'
    FOR SHARE
),
stored AS (
    INSERT INTO {schema}.steps (job_id, kind, name, value, stored_at)
    SELECT id, 'state', '', %(value)s, {schema}.store_now(%(now)s) FROM held
    ON CONFLICT (job_id, kind, name)
    DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at
)
SELECT id FROM held
