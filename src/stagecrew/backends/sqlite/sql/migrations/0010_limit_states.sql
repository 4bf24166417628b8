-- Schema version 10: limit states (backends/limit_states.py): one versioned record per limit name.

-- value: JSON text only the limit's own code reads. version: drawn at random by the writer, the
-- value a compare-and-set compares. expires_at (epoch seconds, this machine's clock): from then
-- on the record reads as absent, and a write may replace it as if there were none.
CREATE TABLE IF NOT EXISTS stagecrew_limit_states (
    name       TEXT    PRIMARY KEY,
    version    INTEGER NOT NULL,
    value      TEXT    NOT NULL,
    expires_at REAL    NOT NULL
) WITHOUT ROWID;

-- The pruner finds the expired records without reading the live ones.
CREATE INDEX IF NOT EXISTS stagecrew_limit_states_expiry
    ON stagecrew_limit_states (expires_at);
