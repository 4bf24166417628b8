-- The newest migration applied to this schema (0 if none); fails if the schema was never migrated.
SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations
