-- Dead and live rows of the jobs table (cumulative statistics), and whether the server's autovacuum runs.
SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0), current_setting('autovacuum') = 'on'
FROM (SELECT {jobs_table}::regclass AS relid) AS t
LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid
