-- Find the stored jobs that hold any of the unique keys in the JSON array ?1 (in one of their unique states).
SELECT unique_key, id
FROM stagecrew_jobs
WHERE unique_key IN (SELECT value FROM json_each(?1))
  AND unique_key IS NOT NULL AND instr(unique_states, state) > 0
