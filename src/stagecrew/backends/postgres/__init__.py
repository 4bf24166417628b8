"""The PostgreSQL engine: `postgresql://user@host:5432/dbname?schema=stagecrew`.

Create or upgrade the schema once per deployment (and after each upgrade of
stagecrew) with `stagecrew migrate`, or `PostgresBackend(url).migrate()`; an
app refuses to use a schema that is missing or older than it expects.

Transactional enqueue: the job is written inside your own transaction, so it
exists if and only if the transaction commits. Pass a psycopg 3 connection or
cursor (sync or async), or a framework's wrapper of one::

    # plain psycopg
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        backend.enqueue_in(conn, [job])  # task.options(connection=conn).enqueue(...)

    # Django (psycopg 3 driver)
    with transaction.atomic():
        order.save()
        backend.enqueue_in(django.db.connection, [job])

    # SQLAlchemy 2 (postgresql+psycopg)
    with Session(engine) as session, session.begin():
        session.add(order)
        backend.enqueue_in(session.connection(), [job])

Completing with the work: a task's `ctx.transaction()` (built on
`PostgresBackend.transaction()` and `complete_in`) marks its attempt
succeeded in the same transaction as the task's own writes; docs/postgres.md
says exactly what is and is not guaranteed.
"""

from __future__ import annotations

from .backend import PostgresBackend
from .statements import schema_version

__all__ = ["PostgresBackend", "schema_version"]
