-- Swap limit records all or none (swap_limits, migration 11): whether it applied, the now, and the records after it as parallel arrays.
SELECT applied, now_at, names, versions, vals, expiries
FROM {schema}.swap_limits(
    %(now)s::double precision,
    %(names)b::text[],
    %(expected)b::bigint[],
    %(versions)b::bigint[],
    %(values)b::text[],
    %(ttls)b::double precision[]
)
