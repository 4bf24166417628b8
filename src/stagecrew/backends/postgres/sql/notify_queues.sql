-- Wake the listeners of each queue in %(queues)s once; sent when the transaction commits.
SELECT pg_notify(%(channel)s, queue) FROM unnest(%(queues)b::text[]) AS woken (queue)
