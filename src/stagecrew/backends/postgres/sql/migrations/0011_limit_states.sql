-- Schema version 11: limit states (backends/limit_states.py), one row per limit name, and their all-or-nothing compare-and-set in one statement.

-- A record per limit name: its version, the JSON text only the limit's code reads, and
-- expires_at (epoch seconds by the store's clock), from which on the row reads as absent and
-- prune_limits may delete it. A rate-limited claim batch rewrites one row, moving expires_at,
-- which the prune index holds, so no update is HOT: the hot rows of a small table leave dead
-- versions behind quickly, hence the early, unthrottled autovacuum of the jobs table, and room
-- on each page (fillfactor) for a row's next version next to it.
CREATE TABLE {schema}.limit_states (
    name       text             PRIMARY KEY,
    version    bigint           NOT NULL,
    value      text             NOT NULL,
    expires_at double precision NOT NULL
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- prune_limits: the expired records, longest expired first.
CREATE INDEX limit_states_expiry
    ON {schema}.limit_states (expires_at);

-- swap_limits, whole: take the advisory lock of each name (in lock id order, so two swaps of
-- overlapping names never wait on each other in opposite orders), read the live records of the
-- names, compare their versions with p_expected (NULL: no live record), and only if all hold,
-- write every record. One round trip, atomic as one statement.
-- The lock is per name, not a row lock: a name with no row (never written, or pruned) has
-- nothing to lock, and two swaps creating it must not both apply. Every swap of a name takes
-- it, so swaps of one name run one at a time; a prune takes no such lock and deletes only
-- expired rows, which a swap reads as absent anyway (an upsert after the row is deleted
-- inserts it again). The lock ids hash the jobs table's name and ':l:' and the name, as
-- enqueue_lock_keys.sql hashes ':i:' and ':u:' keys, so they never meet those locks.
-- VOLATILE and in PL/pgSQL on purpose: under READ COMMITTED each query of the function takes a
-- snapshot when it starts, so the read, made after the locks were granted, sees every swap
-- that held them before. (One SQL statement would read from a snapshot taken before it waited.)
-- For the same reason the now of a real clock is the time the locks were granted
-- (clock_timestamp), not the statement's start: a swap that waited never writes, or hands its
-- caller, a now earlier than the swap it waited for.
-- Returns one row: whether the swap applied, the now, and the records after the call (those
-- written, or the live ones as they are), as parallel arrays.
CREATE FUNCTION {schema}.swap_limits(
    p_fake_now double precision,
    p_names text[],
    p_expected bigint[],
    p_versions bigint[],
    p_values text[],
    p_ttls double precision[],
    OUT applied boolean,
    OUT now_at double precision,
    OUT names text[],
    OUT versions bigint[],
    OUT vals text[],
    OUT expiries double precision[]
)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM count(pg_advisory_xact_lock(lock_id))
    FROM (
        SELECT DISTINCT hashtextextended({jobs_table} || ':l:' || n, 0) AS lock_id
        FROM unnest(p_names) AS n
        ORDER BY lock_id
    ) AS locks;
    now_at := coalesce(p_fake_now, extract(epoch FROM clock_timestamp())::double precision);

    SELECT coalesce(array_agg(l.name), '{{}}'), coalesce(array_agg(l.version), '{{}}'),
           coalesce(array_agg(l.value), '{{}}'), coalesce(array_agg(l.expires_at), '{{}}')
    INTO names, versions, vals, expiries
    FROM {schema}.limit_states AS l
    WHERE l.name = ANY(p_names) AND l.expires_at > now_at;

    applied := NOT EXISTS (
        SELECT
        FROM unnest(p_names, p_expected) AS s (name, expected)
        LEFT JOIN unnest(names, versions) AS r (name, version) ON r.name = s.name
        WHERE r.version IS DISTINCT FROM s.expected
    );
    IF NOT applied THEN
        RETURN;
    END IF;
    -- A limit's state is soft: a server crash that loses the last moments of bucket writes
    -- leaves a bucket a little fuller than it was, never a job lost or run twice. So this
    -- transaction's commit does not wait for its WAL to reach the disk (the flush of the
    -- claim and ack writes around it still does).
    PERFORM set_config('synchronous_commit', 'off', true);

    WITH written AS (
        INSERT INTO {schema}.limit_states AS l (name, version, value, expires_at)
        SELECT s.name, s.version, s.value, now_at + s.ttl
        FROM unnest(p_names, p_versions, p_values, p_ttls) AS s (name, version, value, ttl)
        ON CONFLICT (name) DO UPDATE
        SET version = excluded.version, value = excluded.value, expires_at = excluded.expires_at
        RETURNING l.name, l.version, l.value, l.expires_at
    )
    SELECT coalesce(array_agg(w.name), '{{}}'), coalesce(array_agg(w.version), '{{}}'),
           coalesce(array_agg(w.value), '{{}}'), coalesce(array_agg(w.expires_at), '{{}}')
    INTO names, versions, vals, expiries
    FROM written AS w;
END
$$;
