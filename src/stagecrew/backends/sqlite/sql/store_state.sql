-- Replace job :id's checkpoint; run after job_held.sql said claim :token holds it.
INSERT INTO stagecrew_steps (job_id, kind, name, value, stored_at)
VALUES (:id, 'state', '', :value, :now)
ON CONFLICT (job_id, kind, name) DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at
