"""A minimal SSE client on raw asyncio sockets, light enough for 1,000 concurrent streams."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawStream:
    host: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def open(self, *, read_limit: int = 2**16) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=read_limit
        )
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: text/event-stream",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        status = await self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"bad status: {status!r}")
        while (await self.reader.readline()) not in (b"\r\n", b""):
            pass

    async def frames(self) -> Any:
        """Yield (event, data, id) per SSE message, decoding chunked transfer encoding."""
        assert self.reader is not None
        buffer = b""
        while True:
            size_line = await self.reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            chunk = await self.reader.readexactly(size + 2)
            buffer += chunk[:-2]
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                event = data = id_ = None
                for line in raw.decode().split("\n"):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif line.startswith("id: "):
                        id_ = line[4:]
                if event is not None:
                    yield event, data, id_

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
