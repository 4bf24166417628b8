-- Delete the records of workflows none of whose members is stored any more (pruned with their jobs).
DELETE FROM {schema}.workflows AS w
WHERE NOT EXISTS (SELECT FROM {schema}.jobs AS j WHERE j.workflow_id = w.id)
