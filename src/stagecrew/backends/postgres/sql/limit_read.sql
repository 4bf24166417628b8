-- The live limit records of %(names)s and the store's now, which the first column of every row holds (one row with a NULL name when none is live).
SELECT n.now, l.name, l.version, l.value, l.expires_at
FROM (SELECT {schema}.store_now(%(now)s) AS now) AS n
LEFT JOIN {schema}.limit_states AS l
    ON l.name = ANY(%(names)b::text[]) AND l.expires_at > n.now
