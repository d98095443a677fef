"""A Taskcast server on Redis + PostgreSQL with short hot-retention times, for the tests.

`taskcast start` does not expose the lifecycle durations yet, so the lifecycle test runs
this: the same engine and app the CLI builds, with `LifecycleConfig` from the environment.

    python lifecycle_server.py PORT
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvicorn

from taskcast.core import LifecycleConfig, TaskEngine
from taskcast.postgres import ArchiveWriter, PostgresLongTermStore, apply_migrations
from taskcast.redis import RedisBroadcast, RedisShortTermStore
from taskcast.server import ServerConfig, create_app


def main() -> None:
    port = int(sys.argv[1])
    redis_url = os.environ["TASKCAST_REDIS_URL"]
    prefix = os.environ["TASKCAST_REDIS_PREFIX"]
    pg_url = os.environ["TASKCAST_POSTGRES_URL"]
    schema = os.environ["TASKCAST_POSTGRES_SCHEMA"]
    asyncio.run(apply_migrations(pg_url, schema))
    lifecycle = LifecycleConfig(
        terminal_release_after_seconds=float(os.environ["TEST_TERMINAL_RELEASE_SECONDS"]),
        idle_release_after_seconds=float(os.environ["TEST_IDLE_RELEASE_SECONDS"]),
        sweep_interval_seconds=float(os.environ["TEST_SWEEP_SECONDS"]),
    )
    engine = TaskEngine(
        short_term=RedisShortTermStore(redis_url, prefix=prefix),
        broadcast=RedisBroadcast(redis_url, prefix=prefix),
        long_term=ArchiveWriter(PostgresLongTermStore(pg_url, schema=schema)),
        lifecycle=lifecycle,
    )
    app = create_app(engine, config=ServerConfig(heartbeat_seconds=1.0))
    # `taskcast start` ends open SSE streams on SIGTERM before uvicorn waits for them; plain
    # uvicorn would wait for them, so bound that wait.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
