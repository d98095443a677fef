"""Connection helpers shared by the store and the migration runner."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors, sql
from psycopg_pool import PoolTimeout

from taskcast.core import ConfigError, StorageUnavailableError

__all__ = ["describe_url", "storage_errors", "use_schema"]

logger = logging.getLogger(__name__)

DEPENDENCY = "postgres"


async def use_schema(conn: psycopg.AsyncConnection[object], schema: str) -> None:
    """Create ``schema`` if absent and make it the connection's search path.

    The connection must be in autocommit mode (so it is left idle, as a pool ``configure``
    callback must leave it).
    """
    row = await (
        await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    ).fetchone()
    if row is None:
        try:
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
        except (errors.UniqueViolation, errors.DuplicateSchema):  # pragma: no cover - a race
            # Two connections created it at once; the other one won, which is fine.
            pass
    await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))


def describe_url(url: str) -> str:
    """``dbname on host:port`` without credentials, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable URL)"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{info.get('dbname') or info.get('user') or 'postgres'} on {host}:{port}"


@contextmanager
def storage_errors() -> Iterator[None]:
    """Turn driver errors that mean "not reachable" or "not migrated" into Taskcast errors."""
    try:
        yield
    except PoolTimeout as exc:
        raise StorageUnavailableError(DEPENDENCY, "timeout") from exc
    except (errors.UndefinedTable, errors.UndefinedColumn) as exc:
        raise ConfigError(
            f"The PostgreSQL schema is missing or outdated ({exc.diag.message_primary}); "
            "run `taskcast migrate`"
        ) from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StorageUnavailableError(DEPENDENCY, "connection") from exc
