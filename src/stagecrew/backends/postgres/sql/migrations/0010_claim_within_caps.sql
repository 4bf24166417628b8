-- Schema version 10: a capped claim in one statement (backends/caps.py; see claim_capped.sql).

-- A capped claim, whole: take the lock of capped claims (lock_key; claim_caps_lock.sql takes the
-- same one), count the jobs holding slots, read and lock the candidates with the full groups
-- left out, choose among them by the rule (caps.select_within_caps, encoded again below), and
-- claim the chosen, as claim.sql claims. One round trip instead of one per step.
-- VOLATILE and in PL/pgSQL on purpose: under READ COMMITTED each query of a PL/pgSQL function
-- takes a snapshot of its own when it starts, so the count, made after the lock was granted,
-- sees every job the capped claim before this one took and committed. (One SQL statement would
-- read everything from a snapshot taken before it waited for the lock.) The lock is a
-- transaction lock: the caller's statement, run on its own, holds it until it commits.
-- A slot is a running job whose lease has not expired; the candidate read leaves out the full
-- queues, the full tasks and each (task, key) pair whose key is full for that task, reads at
-- most p_read rows off jobs_claim per queue (FOR UPDATE SKIP LOCKED, in claim order), and the
-- loop takes each one whose caps all have a free slot, counting it against the caps of the
-- ones after it, until p_take are taken.
CREATE FUNCTION {schema}.claim_within_caps(
    p_lock_key bigint,
    p_fake_now double precision,
    p_queues text[],
    p_worker text,
    p_take integer,
    p_lease_seconds double precision,
    p_read integer,
    p_task_names text[],
    p_task_caps integer[],
    p_queue_names text[],
    p_queue_caps integer[],
    p_key_tasks text[],
    p_key_caps integer[]
)
RETURNS SETOF {schema}.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    now_ double precision;
    task_cap jsonb := '{{}}';
    queue_cap jsonb := '{{}}';
    key_cap jsonb := '{{}}';
    task_run jsonb := '{{}}';
    queue_run jsonb := '{{}}';
    key_run jsonb := '{{}}';
    full_tasks text[];
    full_queues text[];
    full_key_tasks text[];
    full_keys text[];
    wanted text[];
    chosen bigint[] := '{{}}';
    c record;
    cap integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    now_ := {schema}.store_now(p_fake_now);
    SELECT coalesce(jsonb_object_agg(n, v), '{{}}') INTO task_cap
    FROM unnest(p_task_names, p_task_caps) AS x (n, v);
    SELECT coalesce(jsonb_object_agg(n, v), '{{}}') INTO queue_cap
    FROM unnest(p_queue_names, p_queue_caps) AS x (n, v);
    SELECT coalesce(jsonb_object_agg(n, v), '{{}}') INTO key_cap
    FROM unnest(p_key_tasks, p_key_caps) AS x (n, v);

    FOR c IN
        SELECT j.task, j.queue, j.concurrency_key AS key, count(*)::integer AS n
        FROM {schema}.jobs AS j
        WHERE j.state = 'running'
          AND j.lease_expires_at > now_
          AND (j.task = ANY(p_task_names)
               OR j.queue = ANY(p_queue_names)
               OR (cardinality(p_key_tasks) > 0 AND j.concurrency_key IS NOT NULL))
        GROUP BY j.task, j.queue, j.concurrency_key
    LOOP
        IF task_cap ? c.task THEN
            task_run := jsonb_set(task_run, ARRAY[c.task],
                to_jsonb(coalesce((task_run ->> c.task)::integer, 0) + c.n));
        END IF;
        IF queue_cap ? c.queue THEN
            queue_run := jsonb_set(queue_run, ARRAY[c.queue],
                to_jsonb(coalesce((queue_run ->> c.queue)::integer, 0) + c.n));
        END IF;
        IF c.key IS NOT NULL THEN
            key_run := jsonb_set(key_run, ARRAY[c.key],
                to_jsonb(coalesce((key_run ->> c.key)::integer, 0) + c.n));
        END IF;
    END LOOP;

    full_tasks := ARRAY(
        SELECT e.key FROM jsonb_each_text(task_cap) AS e
        WHERE coalesce((task_run ->> e.key)::integer, 0) >= e.value::integer
    );
    full_queues := ARRAY(
        SELECT e.key FROM jsonb_each_text(queue_cap) AS e
        WHERE coalesce((queue_run ->> e.key)::integer, 0) >= e.value::integer
    );
    SELECT coalesce(array_agg(t.key), '{{}}'), coalesce(array_agg(k.key), '{{}}')
    INTO full_key_tasks, full_keys
    FROM jsonb_each_text(key_cap) AS t
    JOIN jsonb_each_text(key_run) AS k ON k.value::integer >= t.value::integer;
    wanted := ARRAY(SELECT q FROM unnest(p_queues) AS q WHERE q <> ALL(full_queues));
    IF cardinality(wanted) = 0 THEN
        RETURN;
    END IF;

    FOR c IN
        SELECT head.id, head.task, head.queue, head.concurrency_key AS key
        FROM (
            SELECT w.queue
            FROM unnest(wanted) AS w (queue)
            WHERE NOT EXISTS (SELECT FROM {schema}.paused_queues AS p WHERE p.queue = w.queue)
        ) AS wanted_queues
        CROSS JOIN LATERAL (
            SELECT j.id, j.task, j.queue, j.concurrency_key, j.priority, j.order_at
            FROM {schema}.jobs AS j
            WHERE j.state IN ('available', 'scheduled')
              AND j.queue = wanted_queues.queue
              AND j.run_at <= now_
              AND j.task <> ALL(full_tasks)
              AND NOT EXISTS (
                  SELECT
                  FROM unnest(full_key_tasks, full_keys) AS f (task, key)
                  WHERE f.task = j.task AND f.key = j.concurrency_key
              )
            ORDER BY j.priority, j.order_at, j.id
            LIMIT p_read
            FOR UPDATE SKIP LOCKED
        ) AS head
        ORDER BY head.priority, head.order_at, head.id
        LIMIT p_read
    LOOP
        cap := (task_cap ->> c.task)::integer;
        CONTINUE WHEN cap IS NOT NULL AND coalesce((task_run ->> c.task)::integer, 0) >= cap;
        cap := (queue_cap ->> c.queue)::integer;
        CONTINUE WHEN cap IS NOT NULL AND coalesce((queue_run ->> c.queue)::integer, 0) >= cap;
        IF c.key IS NOT NULL THEN
            cap := (key_cap ->> c.task)::integer;
            CONTINUE WHEN cap IS NOT NULL AND coalesce((key_run ->> c.key)::integer, 0) >= cap;
            key_run := jsonb_set(key_run, ARRAY[c.key],
                to_jsonb(coalesce((key_run ->> c.key)::integer, 0) + 1));
        END IF;
        IF task_cap ? c.task THEN
            task_run := jsonb_set(task_run, ARRAY[c.task],
                to_jsonb(coalesce((task_run ->> c.task)::integer, 0) + 1));
        END IF;
        IF queue_cap ? c.queue THEN
            queue_run := jsonb_set(queue_run, ARRAY[c.queue],
                to_jsonb(coalesce((queue_run ->> c.queue)::integer, 0) + 1));
        END IF;
        chosen := chosen || c.id;
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
