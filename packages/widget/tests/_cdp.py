"""A small headless-Chromium driver over the Chrome DevTools Protocol (CDP).

Just enough for the widget's browser test: launch Chromium, open a page, evaluate
JavaScript, reload, wait for a condition and take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = os.environ.get("TASKCAST_TEST_CHROMIUM", "/usr/bin/chromium")


class CDPError(RuntimeError):
    pass


class Page:
    """One browser tab driven over its CDP websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self.console: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while call_id not in self._replies:
            self._dispatch(json.loads(await self._ws.recv()))
        reply = self._replies.pop(call_id)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            self._replies[message["id"]] = message
            return
        if message.get("method") == "Runtime.consoleAPICalled":
            args = message["params"].get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
        elif message.get("method") == "Runtime.exceptionThrown":
            self.console.append(json.dumps(message["params"]["exceptionDetails"]))
        self._events.append(message)

    async def wait_event(self, method: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for the next CDP event named ``method`` (events seen before are consumed)."""
        with anyio.fail_after(timeout):
            while True:
                for i, event in enumerate(self._events):
                    if event.get("method") == method:
                        del self._events[: i + 1]
                        return event
                self._events.clear()
                self._dispatch(json.loads(await self._ws.recv()))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; fail with its last value after ``timeout``."""
        value: Any = None
        try:
            with anyio.fail_after(timeout):
                while True:
                    value = await self.evaluate(expression)
                    if value:
                        return value
                    await anyio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(
                f"still false after {timeout}s: {expression!r} (last {value!r}); "
                f"console: {self.console}"
            ) from None

    async def navigate(self, url: str) -> None:
        self._events.clear()
        await self.send("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def reload(self) -> None:
        """Start a reload; :meth:`wait_event` ``("Page.loadEventFired")`` waits for it."""
        self._events.clear()
        await self.send("Page.reload", ignoreCache=True)

    async def screenshot(self) -> bytes:
        """A PNG of the page."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


def _page_target(profile: Path, proc: Process, timeout: float = 20.0) -> str:
    """Wait for Chromium's DevTools port, then return its first tab's websocket URL."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    port = None
    while port is None:
        if time.monotonic() > deadline:
            raise CDPError("chromium did not open its DevTools port")
        if proc.returncode is not None:
            raise CDPError(f"chromium exited with {proc.returncode}")
        if marker.exists():
            lines = marker.read_text().split()
            if lines:
                port = int(lines[0])
                break
        time.sleep(0.05)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
        targets = json.load(resp)
    url: str = next(t for t in targets if t.get("type") == "page")["webSocketDebuggerUrl"]
    return url


@contextlib.asynccontextmanager
async def chromium_page(width: int = 900, height: int = 720) -> AsyncIterator[Page]:
    """Launch headless Chromium (its own throwaway profile) and yield its first tab."""
    profile = Path(tempfile.mkdtemp(prefix="taskcast-widget-chromium-"))
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        # Port 0: Chromium picks a free port and writes it to DevToolsActivePort.
        "--remote-debugging-port=0",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    proc = await anyio.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = await anyio.to_thread.run_sync(_page_target, profile, proc)
        async with connect(target, max_size=None) as ws:
            page = Page(ws)
            await page.send("Page.enable")
            await page.send("Runtime.enable")
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        with anyio.CancelScope(shield=True):
            proc.terminate()
            with anyio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await anyio.to_thread.run_sync(shutil.rmtree, profile, True)
