-- Record that migration %(version)s was applied.
INSERT INTO {schema}.schema_migrations (version, name) VALUES (%(version)s, %(name)s)
