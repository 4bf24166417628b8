-- Take this schema's vacuum lock for the session if no other stagecrew process holds it.
SELECT pg_try_advisory_lock(%(key)s)
