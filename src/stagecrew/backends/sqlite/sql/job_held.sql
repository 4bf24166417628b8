-- Whether job :id is running claim :token (the fence of a step or checkpoint write).
SELECT 1 FROM stagecrew_jobs WHERE id = :id AND claims = :token AND state = 'running'
