-- Lock workflow %(id)s's record for the fan-in and read it: no other fan-in of it reads its members until this transaction ends.
SELECT id, status, step, shape, on_failure, created_at, finished_at, result
FROM {schema}.workflows
WHERE id = %(id)s
FOR UPDATE
