-- Store step %(name)s's result for job %(id)s while claim %(token)s holds it running (the row lock keeps a rescue or claim out meanwhile); a stored name keeps its first value. Returns a row if the fence held.
WITH held AS (
    SELECT id FROM {schema}.jobs
    WHERE id = %(id)s AND claims = %(token)s AND state = 'running'
    FOR SHARE
),
stored AS (
    INSERT INTO {schema}.steps (job_id, kind, name, value, stored_at)
    SELECT id, 'step', %(name)s, %(value)s, {schema}.store_now(%(now)s) FROM held
    ON CONFLICT (job_id, kind, name) DO NOTHING
)
SELECT id FROM held
