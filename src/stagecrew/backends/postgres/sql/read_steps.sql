-- Job %(id)s's steps and checkpoint, in the order they were first stored.
SELECT kind, name, value, stored_at FROM {schema}.steps WHERE job_id = %(id)s ORDER BY seq
