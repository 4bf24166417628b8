-- Reclaim dead rows and dead index entries of the jobs table (never blocks reads or writes).
VACUUM (SKIP_LOCKED) {schema}.jobs
