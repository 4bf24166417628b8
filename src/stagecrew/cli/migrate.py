"""`stagecrew migrate`: create or upgrade the store's schema (an explicit step on servers)."""

from __future__ import annotations

import click

from ..backends import backend_from_url
from .options import app_option, load, store_name


@click.command()
@app_option
def migrate(app_ref: str | None) -> None:
    """Apply the store's schema migrations; safe to run from several hosts at once.

    SQLite creates its schema by itself; PostgreSQL needs this command once per
    deployment and after each upgrade of stagecrew (workers refuse to start on
    an out-of-date schema).
    """
    app = load(app_ref, creates=True)
    backend = backend_from_url(app.url, app.clock)
    try:
        applied = backend.migrate()
    finally:
        backend.close()
    where = store_name(app.url)
    if applied:
        names = ", ".join(name.removesuffix(".sql") for name in applied)
        click.echo(f"{where}: applied {names}; the schema is up to date")
    else:
        click.echo(f"{where}: the schema was up to date already; nothing applied")
