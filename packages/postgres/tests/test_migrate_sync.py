"""The synchronous entry point the CLI calls (runs its own event loop)."""

from __future__ import annotations

import psycopg
import pytest

from taskcast.postgres import run_migrate_command

pytestmark = pytest.mark.postgres


def test_run_migrate_command(pg_url: str, schema: str) -> None:
    lines: list[str] = []
    code = run_migrate_command(
        pg_url,
        yes=True,
        interactive=False,
        echo=lines.append,
        confirm=lambda _: False,
        schema=schema,
    )
    assert code == 0
    assert lines[-1] == "Applied 3 migration(s)."
    with psycopg.connect(pg_url) as conn:
        count = conn.execute(f'SELECT count(*) FROM "{schema}"._sqlx_migrations').fetchone()
    assert count == (3,)
