-- Store step :name's result for job :id; run after job_held.sql said claim :token holds it. A stored name keeps its first value.
INSERT INTO stagecrew_steps (job_id, kind, name, value, stored_at)
VALUES (:id, 'step', :name, :value, :now)
ON CONFLICT (job_id, kind, name) DO NOTHING
