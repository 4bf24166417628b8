-- The live limit records whose names start with %(prefix)s (starts_with: a prefix's % and _ are plain characters, and no collation orders it).
SELECT name, version, value, expires_at
FROM {schema}.limit_states
WHERE starts_with(name, %(prefix)s) AND expires_at > {schema}.store_now(%(now)s)
