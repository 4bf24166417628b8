"""`stagecrew migrate`: create or upgrade the store's schema (an explicit step on servers)."""

from __future__ import annotations

import click

from ..backends import backend_from_url, redact_url
from .options import app_option, load


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
        backend.migrate()
    finally:
        backend.close()
    click.echo(f"the schema of {redact_url(app.url)} is up to date")
