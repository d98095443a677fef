"""The Lua scripts, shipped as ``.lua`` files in the package and registered for EVALSHA."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["Scripts", "script_source"]

# Scripts that locate events by index get the shared search helpers prepended.
_NEEDS_SEARCH = frozenset({"commit", "read_events"})


@cache
def script_source(name: str) -> str:
    """The full Lua source of a script as sent to Redis."""
    folder = resources.files(__package__).joinpath("lua")
    body = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name in _NEEDS_SEARCH:
        body = folder.joinpath("search.lua").read_text(encoding="utf-8") + "\n" + body
    return body


@dataclass(slots=True, frozen=True)
class Scripts:
    """The registered scripts of one client (redis-py loads them on first NOSCRIPT)."""

    commit: AsyncScript
    read_events: AsyncScript
    create_task: AsyncScript
    delete_task: AsyncScript
    tasks_after: AsyncScript
    release: AsyncScript
    restore: AsyncScript
    archive_claim: AsyncScript
    archive_settle: AsyncScript

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        return cls(
            commit=client.register_script(script_source("commit")),
            read_events=client.register_script(script_source("read_events")),
            create_task=client.register_script(script_source("create_task")),
            delete_task=client.register_script(script_source("delete_task")),
            tasks_after=client.register_script(script_source("tasks_after")),
            release=client.register_script(script_source("release")),
            restore=client.register_script(script_source("restore")),
            archive_claim=client.register_script(script_source("archive_claim")),
            archive_settle=client.register_script(script_source("archive_settle")),
        )
