-- The live limit records of the names in the JSON array :names, with the columns in the order _limit_from_row reads them.
SELECT name, version, value, expires_at
FROM stagecrew_limit_states
WHERE name IN (SELECT value FROM json_each(:names)) AND expires_at > :now
