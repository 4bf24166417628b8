-- Draw %(count)s job ids in increasing order, and read the store clock, for a bulk enqueue by COPY.
SELECT {schema}.store_now(%(now)s),
       (SELECT array_agg(id ORDER BY id)
        FROM (SELECT nextval({id_sequence}::regclass) AS id
              FROM generate_series(1, %(count)s)) AS drawn)
