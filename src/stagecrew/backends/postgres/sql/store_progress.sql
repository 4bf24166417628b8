-- Replace job %(id)s's progress, only while it is running claim %(token)s. Returns a row if it did.
UPDATE {schema}.jobs
SET progress = %(progress)s, progress_at = {schema}.store_now(%(now)s)
WHERE id = %(id)s AND claims = %(token)s AND state = 'running'
RETURNING id
