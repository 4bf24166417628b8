-- Release this schema's vacuum lock.
SELECT pg_advisory_unlock(%(key)s)
