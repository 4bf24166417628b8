-- Serialise migrations of one schema across every host until this transaction ends.
SELECT pg_advisory_xact_lock(%(key)s)
