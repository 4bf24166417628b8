-- Schema version 14: a capped claim that, in the usual case, counts, reads and claims in one query under the lock, locking about as many rows as it takes (backends/caps.py; see claim_capped.sql).

-- What changed from migration 10's claim_within_caps, whose lock, count, rule and claim this one
-- keeps: that one read and locked up to 4 x p_take + 32 candidates (FOR UPDATE SKIP LOCKED: a
-- tuple lock written for every row, each skipped by every concurrent claimer until the commit),
-- walked them one by one in PL/pgSQL, and counted the running jobs with a bitmap scan, which
-- visits the index entries of every job that stopped running since the last vacuum. This one,
-- once it holds the lock:
-- - reads p_take candidates in claim order and claims them all in the same statement when
--   every group keeps within its cap with all of them counted (the rule would take exactly
--   these): one query for the whole claim;
-- - else counts again and walks what it reads one by one, reading again, as many as are still
--   wanted, with the groups full by then left out (this claim's takes counted);
-- - counts with plain index scans (SET enable_bitmapscan = off), which mark the entries of
--   jobs that stopped running dead as they pass them.
-- An overload (the caps as jsonb, no p_read): the migration 10 function stays for a worker of
-- the previous version still running during an upgrade; both take the same lock before they
-- count.
--
-- As in migration 10: VOLATILE and in PL/pgSQL on purpose, so each query, made after the lock
-- was granted, takes its own snapshot and sees every job the capped claim before this one took
-- and committed; the lock is a transaction lock, held by the caller's statement to its commit.
-- A slot is a running job whose lease has not expired; a candidate is taken when each cap of its
-- own has a free slot, counting against the caps of the ones after it (caps.select_within_caps).

-- The jobs holding slots of the caps named: running with a lease that has not expired, of a
-- task of p_task_names or a queue of p_queue_names, or, when p_keys, with a concurrency key
-- (tasks that share a key group share its slots). A plain SQL query, so that it is inlined into
-- the statement that reads it, and reads that statement's snapshot.
CREATE FUNCTION {schema}.caps_held(
    p_now double precision,
    p_task_names text[],
    p_queue_names text[],
    p_keys boolean
)
RETURNS TABLE (task text, queue text, key text)
LANGUAGE sql STABLE
AS $$
    SELECT j.task, j.queue, j.concurrency_key
    FROM {schema}.jobs AS j
    WHERE j.state = 'running'
      AND j.lease_expires_at > p_now
      AND (j.task = ANY(p_task_names)
           OR j.queue = ANY(p_queue_names)
           OR (p_keys AND j.concurrency_key IS NOT NULL))
$$;

-- Up to p_limit more candidates of p_queues, due by p_now, in claim order, each locked as read
-- (FOR UPDATE SKIP LOCKED), leaving out the groups full by the counts given and the rows of
-- p_read_ids (read already: a transaction's own row locks skip nothing), as parallel arrays.
CREATE FUNCTION {schema}.caps_candidates(
    p_now double precision,
    p_queues text[],
    p_limit integer,
    p_task_cap jsonb,
    p_queue_cap jsonb,
    p_key_cap jsonb,
    p_task_run jsonb,
    p_queue_run jsonb,
    p_key_run jsonb,
    p_read_ids bigint[],
    OUT ids bigint[],
    OUT tasks text[],
    OUT queues text[],
    OUT keys text[]
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    full_tasks text[];
    full_queues text[];
    full_key_tasks text[];
    full_keys text[];
    wanted text[];
BEGIN
    full_tasks := ARRAY(
        SELECT e.key FROM jsonb_each_text(p_task_cap) AS e
        WHERE coalesce((p_task_run ->> e.key)::integer, 0) >= e.value::integer
    );
    full_queues := ARRAY(
        SELECT e.key FROM jsonb_each_text(p_queue_cap) AS e
        WHERE coalesce((p_queue_run ->> e.key)::integer, 0) >= e.value::integer
    );
    SELECT coalesce(array_agg(c.key), '{{}}'), coalesce(array_agg(r.key), '{{}}')
    INTO full_key_tasks, full_keys
    FROM jsonb_each_text(p_key_cap) AS c
    JOIN jsonb_each_text(p_key_run) AS r ON r.value::integer >= c.value::integer;
    wanted := ARRAY(
        SELECT w FROM unnest(p_queues) AS w
        WHERE w <> ALL(full_queues)
          AND NOT EXISTS (SELECT FROM {schema}.paused_queues AS p WHERE p.queue = w)
    );
    SELECT coalesce(array_agg(h.id ORDER BY h.priority, h.order_at, h.id), '{{}}'),
           coalesce(array_agg(h.task ORDER BY h.priority, h.order_at, h.id), '{{}}'),
           coalesce(array_agg(h.queue ORDER BY h.priority, h.order_at, h.id), '{{}}'),
           coalesce(array_agg(h.concurrency_key ORDER BY h.priority, h.order_at, h.id), '{{}}')
    INTO ids, tasks, queues, keys
    FROM (
        SELECT head.*
        FROM unnest(wanted) AS wanted_queues (queue)
        CROSS JOIN LATERAL (
            SELECT j.id, j.task, j.queue, j.concurrency_key, j.priority, j.order_at
            FROM {schema}.jobs AS j
            WHERE j.state IN ('available', 'scheduled')
              AND j.queue = wanted_queues.queue
              AND j.run_at <= p_now
              AND j.task <> ALL(full_tasks)
              AND j.id <> ALL(p_read_ids)
              AND NOT EXISTS (
                  SELECT
                  FROM unnest(full_key_tasks, full_keys) AS f (task, key)
                  WHERE f.task = j.task AND f.key = j.concurrency_key
              )
            ORDER BY j.priority, j.order_at, j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) AS head
        ORDER BY head.priority, head.order_at, head.id
        LIMIT p_limit
    ) AS h;
END
$$;

CREATE FUNCTION {schema}.claim_within_caps(
    p_lock_key bigint,
    p_fake_now double precision,
    p_queues text[],
    p_worker text,
    p_take integer,
    p_lease_seconds double precision,
    p_task_names text[],
    p_task_cap jsonb,
    p_queue_names text[],
    p_queue_cap jsonb,
    p_key_cap jsonb
)
RETURNS SETOF {schema}.jobs
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
AS $$
DECLARE
    now_ double precision := {schema}.store_now(p_fake_now);
    keyed boolean := p_key_cap <> '{{}}';
    task_run jsonb;
    queue_run jsonb;
    key_run jsonb;
    more record;
    read_ids bigint[] := '{{}}';
    read_tasks text[] := '{{}}';
    read_queues text[] := '{{}}';
    read_keys text[] := '{{}}';
    pos integer := 0;
    chosen bigint[] := '{{}}';
    t text;
    q text;
    k text;
    cap integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);

    -- The usual case, in one statement: read p_take candidates in claim order, as claim.sql
    -- reads them, and claim them all when every group keeps within its cap with all of them
    -- counted beside the slots held now (running jobs whose lease has not expired: by capped
    -- task, by capped queue, and by key, of every task, since tasks that share a key group
    -- share its slots). The rule would take exactly these. (Its UPDATE repeats the one at the
    -- end on purpose: deciding first and claiming after costs a statement more per claim.)
    RETURN QUERY
    WITH held AS (
        SELECT * FROM {schema}.caps_held(now_, p_task_names, p_queue_names, keyed)
    ),
    due AS (
        SELECT head.id, head.task, head.queue, head.concurrency_key AS key
        FROM (
            SELECT w.queue
            FROM unnest(p_queues) AS w (queue)
            WHERE NOT EXISTS (SELECT FROM {schema}.paused_queues AS p WHERE p.queue = w.queue)
        ) AS wanted
        CROSS JOIN LATERAL (
            SELECT j.id, j.task, j.queue, j.concurrency_key, j.priority, j.order_at
            FROM {schema}.jobs AS j
            WHERE j.state IN ('available', 'scheduled')
              AND j.queue = wanted.queue
              AND j.run_at <= now_
            ORDER BY j.priority, j.order_at, j.id
            LIMIT p_take
            FOR UPDATE SKIP LOCKED
        ) AS head
        ORDER BY head.priority, head.order_at, head.id
        LIMIT p_take
    ),
    totals AS (
        SELECT (p_task_cap ->> d.task)::integer AS cap,
               (SELECT count(*) FROM held AS h WHERE h.task = d.task) + count(*) AS total
        FROM due AS d GROUP BY d.task
        UNION ALL
        SELECT (p_queue_cap ->> d.queue)::integer,
               (SELECT count(*) FROM held AS h WHERE h.queue = d.queue) + count(*)
        FROM due AS d GROUP BY d.queue
        UNION ALL
        SELECT min((p_key_cap ->> d.task)::integer),
               (SELECT count(*) FROM held AS h WHERE h.key = d.key) + count(*)
        FROM due AS d WHERE d.key IS NOT NULL GROUP BY d.key
    )
    UPDATE {schema}.jobs AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        claims = j.claims + 1,
        lease_owner = p_worker,
        lease_expires_at = now_ + p_lease_seconds,
        started_at = now_
    WHERE j.id = ANY(ARRAY(SELECT d.id FROM due AS d))
      AND (SELECT coalesce(bool_and(x.total <= x.cap), true)
           FROM totals AS x WHERE x.cap IS NOT NULL)
    RETURNING j.*;
    IF FOUND THEN
        RETURN;
    END IF;

    -- Nothing due, or the caps turn some of the read away: count the slots held, then read
    -- and walk the candidates one by one, taking what the caps admit, reading again (as many
    -- as are still wanted, the groups full by then left out) while short. The rows the
    -- statement above locked are still this transaction's, and read again here.
    WITH held AS (
        SELECT * FROM {schema}.caps_held(now_, p_task_names, p_queue_names, keyed)
    )
    SELECT
        (SELECT coalesce(jsonb_object_agg(g.task, g.n), '{{}}')
         FROM (SELECT h.task, count(*) AS n FROM held AS h
               WHERE h.task = ANY(p_task_names) GROUP BY h.task) AS g),
        (SELECT coalesce(jsonb_object_agg(g.queue, g.n), '{{}}')
         FROM (SELECT h.queue, count(*) AS n FROM held AS h
               WHERE h.queue = ANY(p_queue_names) GROUP BY h.queue) AS g),
        (SELECT coalesce(jsonb_object_agg(g.key, g.n), '{{}}')
         FROM (SELECT h.key, count(*) AS n FROM held AS h
               WHERE keyed AND h.key IS NOT NULL GROUP BY h.key) AS g)
    INTO task_run, queue_run, key_run;

    LOOP
        more := {schema}.caps_candidates(now_, p_queues, p_take - cardinality(chosen),
                                         p_task_cap, p_queue_cap, p_key_cap,
                                         task_run, queue_run, key_run, read_ids);
        EXIT WHEN cardinality(more.ids) = 0;
        read_ids := read_ids || more.ids;
        read_tasks := read_tasks || more.tasks;
        read_queues := read_queues || more.queues;
        read_keys := read_keys || more.keys;
        WHILE pos < cardinality(read_ids) AND cardinality(chosen) < p_take LOOP
            pos := pos + 1;
            t := read_tasks[pos];
            q := read_queues[pos];
            k := read_keys[pos];
            cap := (p_task_cap ->> t)::integer;
            CONTINUE WHEN cap IS NOT NULL AND coalesce((task_run ->> t)::integer, 0) >= cap;
            cap := (p_queue_cap ->> q)::integer;
            CONTINUE WHEN cap IS NOT NULL AND coalesce((queue_run ->> q)::integer, 0) >= cap;
            IF k IS NOT NULL THEN
                cap := (p_key_cap ->> t)::integer;
                CONTINUE WHEN cap IS NOT NULL AND coalesce((key_run ->> k)::integer, 0) >= cap;
                key_run := jsonb_set(key_run, ARRAY[k],
                    to_jsonb(coalesce((key_run ->> k)::integer, 0) + 1));
            END IF;
            IF p_task_cap ? t THEN
                task_run := jsonb_set(task_run, ARRAY[t],
                    to_jsonb(coalesce((task_run ->> t)::integer, 0) + 1));
            END IF;
            IF p_queue_cap ? q THEN
                queue_run := jsonb_set(queue_run, ARRAY[q],
                    to_jsonb(coalesce((queue_run ->> q)::integer, 0) + 1));
            END IF;
            chosen := chosen || read_ids[pos];
        END LOOP;
        EXIT WHEN cardinality(chosen) >= p_take;
    END LOOP;

    RETURN QUERY
    UPDATE {schema}.jobs AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        claims = j.claims + 1,
        lease_owner = p_worker,
        lease_expires_at = now_ + p_lease_seconds,
        started_at = now_
    WHERE j.id = ANY(chosen)
    RETURNING j.*;
END
$$;
