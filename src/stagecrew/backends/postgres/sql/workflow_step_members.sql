-- What the fan-in reads of the members of workflow %(id)s's step %(step)s, by index.
SELECT workflow_index, state, result, errors
FROM {schema}.jobs
WHERE workflow_id = %(id)s AND workflow_step = %(step)s
ORDER BY workflow_index
