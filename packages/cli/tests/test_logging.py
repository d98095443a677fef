"""The logging configuration the command applies."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from rich.logging import RichHandler

from taskcast.cli import logging_config
from taskcast.cli._logging import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    names = ("taskcast", "uvicorn", "uvicorn.error", "uvicorn.access")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_plain_lines_when_not_a_terminal(restore_logging: None) -> None:
    configure_logging("info", rich=False)
    handler = logging.getLogger().handlers[-1]
    assert type(handler) is logging.StreamHandler
    record = logging.LogRecord("taskcast.x", logging.INFO, "f", 1, "hello %s", ("you",), None)
    line = handler.format(record)
    assert line.endswith("INFO    taskcast.x: hello you")
    assert logging.getLogger("taskcast").level == logging.INFO
    # uvicorn's lifecycle chatter stays quiet above debug; access lines only on request.
    assert logging.getLogger("uvicorn.error").level == logging.WARNING
    assert logging.getLogger("uvicorn.access").level == logging.WARNING


def test_rich_handler_on_a_terminal(restore_logging: None) -> None:
    configure_logging("debug", rich=True, access_log=True)
    assert isinstance(logging.getLogger().handlers[-1], RichHandler)
    assert logging.getLogger("uvicorn.error").level == logging.DEBUG
    assert logging.getLogger("uvicorn.access").level == logging.INFO


def test_terminal_detection_follows_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    assert "()" in logging_config("error")["handlers"]["default"]
    monkeypatch.undo()
    assert logging_config("error", rich=False)["root"]["level"] == logging.ERROR
