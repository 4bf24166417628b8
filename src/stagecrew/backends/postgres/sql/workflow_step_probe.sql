-- Two index probes of workflow %(id)s's step %(step)s: is a member unfinished, did one fail (dead or cancelled)?
SELECT EXISTS (SELECT FROM {schema}.jobs
               WHERE workflow_id = %(id)s AND workflow_step = %(step)s
                 AND state IN ('scheduled', 'available', 'running')),
       EXISTS (SELECT FROM {schema}.jobs
               WHERE workflow_id = %(id)s AND workflow_step = %(step)s
                 AND state IN ('dead', 'cancelled'))
