-- Server settings a worker checks at start: they decide whether the jobs table stays healthy and durable.
SELECT current_setting('autovacuum'), current_setting('fsync'), current_setting('synchronous_commit')
