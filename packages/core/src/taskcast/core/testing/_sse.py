"""Parse SSE frames produced by TaskStream (test helper)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Frame:
    event: str | None
    data: Any
    id: str | None
    comment: str | None = None
    retry: int | None = None


def parse(raw: bytes) -> Frame:
    event = data = id_ = comment = retry = None
    for line in raw.decode().split("\n"):
        if not line:
            continue
        if line.startswith(":"):
            comment = line[1:].strip()
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line.startswith("id: "):
            id_ = line[4:]
        elif line.startswith("retry: "):
            retry = int(line[7:])
    return Frame(event, data, id_, comment, retry)


async def collect(
    frames: AsyncIterator[bytes], *, until_done: bool = True, max_frames: int = 100_000
) -> list[Frame]:
    out = []
    async for raw in frames:
        frame = parse(raw)
        out.append(frame)
        if frame.event == "taskcast.done" or len(out) >= max_frames:
            break
    return out


def events(frames: list[Frame]) -> list[Any]:
    return [f.data for f in frames if f.event == "taskcast.event"]
