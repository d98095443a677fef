"""A Taskcast server on a SQLite file, run as a child process: ``_server_child.py PORT DB``."""

from __future__ import annotations

import sys

import uvicorn

from taskcast.core import TaskEngine
from taskcast.server import ServerConfig, create_app
from taskcast.sqlite import SQLiteStore


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    engine = TaskEngine(short_term=SQLiteStore(path))
    app = create_app(engine, config=ServerConfig(retry_ms=50, heartbeat_seconds=0.5))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
