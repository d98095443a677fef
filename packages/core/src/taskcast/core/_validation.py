"""Input rules every interface shares: task ids, the length of names and ids, NUL.

The engine applies them to what in-process callers pass and the HTTP API reaches them
through the engine, so every interface and every backend gives the same answer.

A task id may hold any character except what cannot work: control characters (C0, DEL,
C1; ``\\u0000`` cannot be stored in PostgreSQL), lone surrogates (not valid Unicode, so not
storable as text), ``/`` (a percent-encoded ``/`` in a URL path is decoded before routing, so
``/tasks/a%2Fb`` never reaches ``/tasks/{id}``) and the ids ``.`` and ``..`` (URL path
normalisation removes them). ULIDs and ids such as ``demo``, ``job-1``, ``a.b``,
``user:42``, ``a b`` or ``café`` are fine.

JSON can carry NUL only as the escape ``\\u0000``; PostgreSQL's ``text`` and ``jsonb`` refuse
it, so a NUL anywhere in a task or an event is refused before it is acknowledged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ._errors import InvalidInputError

__all__ = [
    "MAX_CHARS_CAP",
    "check_name",
    "check_no_nul",
    "check_task_id",
    "find_nul",
    "task_id_problem",
]

MAX_CHARS_CAP: Final = 1024
"""Highest allowed ``max_id_chars`` / ``max_name_chars``: PostgreSQL indexes a task id and a
series id together, and one index entry holds at most 2,704 bytes."""

# One search finds every character a task id must not hold.
_ID_REFUSED: Final = re.compile(r"[\x00-\x1f\x7f-\x9f/\ud800-\udfff]")


def task_id_problem(task_id: object, max_chars: int) -> str | None:
    """Why ``task_id`` cannot be a task id, or ``None`` when it can."""
    if not isinstance(task_id, str) or not task_id:
        return "must be a non-empty string"
    if len(task_id) > max_chars:
        return f"longer than {max_chars} characters"
    found = _ID_REFUSED.search(task_id)
    if found is not None:
        char = found.group()
        if char == "/":
            return "must not contain '/'"
        if "\ud800" <= char <= "\udfff":
            return "contains a lone surrogate (not valid Unicode)"
        return f"contains the control character U+{ord(char):04X}"
    if task_id in (".", ".."):
        return "'.' and '..' cannot be used in a URL"
    return None


def check_task_id(task_id: object, max_chars: int) -> str:
    """``task_id`` if it is a valid task id.

    Raises:
        InvalidInputError: it is not (the message says why; HTTP 400).
    """
    problem = task_id_problem(task_id, max_chars)
    if problem is not None:
        raise InvalidInputError(f"Invalid task id: {problem}")
    return task_id  # type: ignore[return-value]  # a str, checked above


def check_name(field: str, value: object, max_chars: int) -> None:
    """A short string a client names things with (a type, a series id, a tag, a key).

    Raises:
        InvalidInputError: not a string, longer than ``max_chars`` or holding a NUL.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"Invalid field {field}: must be a string")
    if len(value) > max_chars:
        raise InvalidInputError(
            f"Invalid field {field}: longer than {max_chars} characters (max {max_chars})"
        )
    if "\x00" in value:
        raise InvalidInputError(_nul_message(field))


def find_nul(value: Any) -> str | None:
    """The dotted path of the first NUL character in a JSON value, or ``None``.

    Keys and values are searched; the path of a NUL in a key ends at that key. An empty
    path (``""``) means ``value`` itself is a string holding NUL.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, Mapping):
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return where
                stack.append((child, where))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(item))
    return None


def check_no_nul(value: Any, field: str = "") -> None:
    """Refuse a NUL character anywhere in ``value`` (the value of ``field``, if named).

    Raises:
        InvalidInputError: naming the path of the NUL (HTTP 400).
    """
    path = find_nul(value)
    if path is not None:
        raise InvalidInputError(_nul_message(".".join(p for p in (field, path) if p)))


def _nul_message(field: str) -> str:
    # The path may itself hold the NUL (a key); show it escaped.
    where = f"field {field}" if field else "value"
    where = where.replace("\x00", "\\u0000")
    return f"Invalid {where}: contains a NUL character (\\u0000), which cannot be stored"
