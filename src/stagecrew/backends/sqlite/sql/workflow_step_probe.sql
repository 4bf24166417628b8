-- Two index probes of workflow ?1's step ?2: is a member unfinished, did one fail (dead or cancelled)?
SELECT EXISTS (SELECT 1 FROM stagecrew_jobs
               WHERE workflow_id = ?1 AND workflow_step = ?2
                 AND state IN ('scheduled', 'available', 'running')),
       EXISTS (SELECT 1 FROM stagecrew_jobs
               WHERE workflow_id = ?1 AND workflow_step = ?2 AND state IN ('dead', 'cancelled'))
