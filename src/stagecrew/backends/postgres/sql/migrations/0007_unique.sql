-- Schema version 7: unique keys by state (backends/unique.py): at most one job holds a key while in its unique states.

-- unique_states: the states in which the job holds unique_key, as names joined by commas (no
-- state's name is part of another's, so strpos() tells whether the job's state is one of them).
-- Both columns are NULL on every existing row: adding them rewrites nothing.
ALTER TABLE {schema}.jobs ADD COLUMN unique_key text;

ALTER TABLE {schema}.jobs ADD COLUMN unique_states text;

-- The store's guarantee: every write that would make a second job hold a key fails, whichever
-- statement makes it. Queries must repeat this WHERE text to use the index.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_key
    ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND strpos(unique_states, state) > 0;
