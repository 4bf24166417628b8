-- Schema version 7: unique keys by state (backends/unique.py): at most one job holds a key while in its unique states.

-- unique_states: the states in which the job holds unique_key, as names joined by commas (no
-- state's name is part of another's, so instr() tells whether the job's state is one of them).
ALTER TABLE stagecrew_jobs ADD COLUMN unique_key TEXT;

ALTER TABLE stagecrew_jobs ADD COLUMN unique_states TEXT;

-- The store's guarantee: every write that would make a second job hold a key fails, whichever
-- statement makes it. Queries must repeat this WHERE text to use the index.
CREATE UNIQUE INDEX IF NOT EXISTS stagecrew_jobs_unique_key
    ON stagecrew_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND instr(unique_states, state) > 0;
