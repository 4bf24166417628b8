-- The live limit records whose name starts with :prefix (compared as text, not with LIKE, whose % and _ a name may hold), in the order _limit_from_row reads them.
SELECT name, version, value, expires_at
FROM stagecrew_limit_states
WHERE name >= :prefix AND substr(name, 1, length(:prefix)) = :prefix AND expires_at > :now
ORDER BY name
