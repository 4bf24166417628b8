-- Add each of %(ns)s to its key's count in the bucket of the store's current minute, creating the rows that do not exist; keys come in key order and distinct.
INSERT INTO {schema}.job_counts AS c (bucket, queue, task, outcome, n)
SELECT floor({schema}.store_now(%(now)s) / 60) * 60, k.queue, k.task, k.outcome, k.n
FROM unnest(%(queues)s::text[], %(tasks)s::text[], %(outcomes)s::text[], %(ns)s::bigint[])
    WITH ORDINALITY AS k (queue, task, outcome, n, place)
ORDER BY k.place
ON CONFLICT (bucket, queue, task, outcome) DO UPDATE SET n = c.n + excluded.n
