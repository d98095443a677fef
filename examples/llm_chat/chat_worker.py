"""The worker: picks up pending ``llm.chat`` tasks and streams a (fake) LLM answer into them.

Run it next to a Taskcast server (``TASKCAST_URL``, default http://127.0.0.1:3721)::

    uv run python examples/llm_chat/chat_worker.py

It only talks HTTP, through the server SDK: several workers may run at once, on any
machine. A worker claims a task by moving it from ``pending`` to ``running``; the server
allows that transition once, so two workers never answer the same question.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

from taskcast.server_sdk import (
    ConflictError,
    ServiceUnavailableError,
    TaskcastServerClient,
    TaskcastTransportError,
)

logger = logging.getLogger("llm_chat.worker")

CHUNK_DELAY = float(os.environ.get("CHAT_CHUNK_DELAY", "0.08"))
"""Seconds between chunks of the fake model (a real one streams at about this pace)."""


def fake_llm(prompt: str) -> Iterator[str]:
    """Stand-in for a streaming LLM call (no network): yields the answer a few characters
    at a time, as a real model's stream does."""
    answer = (
        f"You asked: “{prompt.strip()}”. "
        "Here is a streamed answer. Each chunk is published to Taskcast as it is produced; "
        "the browser shows it as it arrives, and a refresh in the middle of the answer "
        "brings back exactly the text so far, then continues live. "
        "Nothing is lost when the page reloads or the connection drops."
    )
    for start in range(0, len(answer), 7):
        if CHUNK_DELAY:
            time.sleep(CHUNK_DELAY)
        yield answer[start : start + 7]


def answer(client: TaskcastServerClient, task_id: str, prompt: str) -> bool:
    """Claim the task and stream the answer into it; False if another worker has it."""
    try:
        with client.run(task_id) as run:  # pending -> running; completed when the block ends
            # Chunks are coalesced into few requests; the series' text is their concatenation.
            result = run.publish_stream(fake_llm(prompt), series_id="answer")
            run.result = {"characters": len(result.text), "chunks": result.chunks}
    except ConflictError:
        return False  # claimed by another worker (or cancelled) meanwhile
    return True


def work(client: TaskcastServerClient, *, stop: threading.Event, poll: float = 0.5) -> int:
    """Answer pending questions until ``stop`` is set; returns how many were answered."""
    answered = 0
    while not stop.is_set():
        try:
            page = client.list_tasks(status="pending", type="llm.chat", limit=10)
        except (TaskcastTransportError, ServiceUnavailableError) as exc:
            # The server is restarting or not up yet: its tasks wait for us.
            logger.warning("Taskcast is unreachable (%s); retrying", exc)
            stop.wait(max(poll, 1.0))
            continue
        for task in page.tasks:
            prompt = str((task.params or {}).get("prompt", ""))
            if answer(client, task.id, prompt):
                answered += 1
                logger.info("answered %s", task.id)
        if not page.tasks:
            stop.wait(poll)
    return answered


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per poll
    url = os.environ.get("TASKCAST_URL", "http://127.0.0.1:3721")
    with TaskcastServerClient(url, token=os.environ.get("TASKCAST_TOKEN") or None) as client:
        logger.info("waiting for questions at %s (Ctrl+C to stop)", url)
        try:
            work(client, stop=threading.Event())
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
