"""Logging for the command: libraries only log, the application configures (style §9.8).

On a terminal, records go through rich's handler; otherwise (a service manager, a container,
a pipe) they are plain single lines, one record per line, easy to ship and grep. The same
dictionary is handed to uvicorn so that its worker processes log the same way.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

__all__ = ["configure_logging", "logging_config"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _rich_handler() -> logging.Handler:
    from rich.console import Console
    from rich.logging import RichHandler

    return RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)


def logging_config(
    level: str, *, rich: bool | None = None, access_log: bool = False
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary.

    Args:
        level: ``debug``, ``info``, ``warning``, ``error`` or ``critical`` for Taskcast's loggers.
        rich: Use rich's handler; by default only when stderr is a terminal.
        access_log: Show uvicorn's per-request lines.
    """
    if rich is None:
        rich = sys.stderr.isatty()
    numeric = _LEVELS[level]
    handler: dict[str, Any]
    if rich:
        handler = {"()": "taskcast.cli._logging._rich_handler", "formatter": "rich"}
    else:
        handler = {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        }
    # uvicorn's own lifecycle chatter ("Started server process", "Waiting for application
    # startup") adds nothing to our startup line; it shows at debug level only.
    server_level = numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
            "rich": {"format": "%(name)s: %(message)s", "datefmt": "[%X]"},
        },
        "handlers": {"default": handler},
        "loggers": {
            "taskcast": {"level": numeric},
            "uvicorn": {"level": server_level},
            "uvicorn.error": {"level": server_level},
            "uvicorn.access": {"level": logging.INFO if access_log else logging.WARNING},
        },
        "root": {"level": max(numeric, logging.WARNING), "handlers": ["default"]},
    }


def configure_logging(
    level: str, *, rich: bool | None = None, access_log: bool = False
) -> dict[str, Any]:
    """Apply :func:`logging_config` and return it (uvicorn re-applies it in workers)."""
    config = logging_config(level, rich=rich, access_log=access_log)
    logging.config.dictConfig(config)
    return config
