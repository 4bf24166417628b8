-- The workflow's last step finished: its status, result and finish time (the store's clock).
UPDATE {schema}.workflows
SET status = %(status)s, result = %(result)s, finished_at = {schema}.store_now(%(now)s)
WHERE id = %(id)s AND status IN ('running', 'failed')
