-- Complete many attempts in one statement, each fenced as in ack.sql; :acks is a JSON array of
-- [id, token, result]. NOT INDEXED makes the planner look each job up by id instead of
-- scanning every running job through stagecrew_jobs_state_queue.
UPDATE stagecrew_jobs NOT INDEXED
SET state = 'succeeded',
    result = done.result,
    finished_at = :now,
    lease_owner = NULL,
    lease_expires_at = NULL
FROM (
    SELECT json_extract(value, '$[0]') AS id,
           json_extract(value, '$[1]') AS token,
           json_extract(value, '$[2]') AS result
    FROM json_each(:acks)
) AS done
WHERE stagecrew_jobs.id = done.id
  AND stagecrew_jobs.claims = done.token
  AND stagecrew_jobs.state = 'running'
RETURNING stagecrew_jobs.id, stagecrew_jobs.workflow_id
