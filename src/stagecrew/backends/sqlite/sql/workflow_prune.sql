-- Delete the records of workflows none of whose members is stored any more (pruned with their jobs).
DELETE FROM stagecrew_workflows
WHERE NOT EXISTS (SELECT 1 FROM stagecrew_jobs WHERE workflow_id = stagecrew_workflows.id)
