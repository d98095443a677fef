"""The Taskcast API and the live task widget in one FastAPI app.

Run it from the repository root and open http://127.0.0.1:8000/ ::

    uv run uvicorn --app-dir packages/widget/examples demo_app:app

``/`` starts a task that streams an answer word by word and redirects to the widget's page
(``/widget/tasks/{id}``); ``/embed/{id}`` shows the widget inside a page of your own.
Refresh either page while the answer streams: the text comes back exactly, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment

from taskcast.core import EventInput, MemoryShortTermStore, TaskEngine, TaskInput
from taskcast.server import create_app, taskcast_lifespan
from taskcast.widget import TaskcastWidget, WidgetConfig

ANSWER = (
    "Taskcast keeps every event of a task in order, so a page that reconnects, "
    "or is refreshed in the middle of a stream, picks up exactly where it was."
)
DELAY = 0.15  # seconds between words

engine = TaskEngine(short_term=MemoryShortTermStore())
# The API is mounted at /taskcast below, so that is where the browser finds its streams.
widget = TaskcastWidget(WidgetConfig(taskcast_url="/taskcast", title="Answer"), engine=engine)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A mounted app's lifespan does not run: start and stop the engine from the host's.
    async with taskcast_lifespan(engine):
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/taskcast", create_app(engine))
widget.mount(app)  # GET /widget/tasks/{id}, /widget/tasks/{id}/fragment, /widget/static/...

templates = Environment(autoescape=True)
widget.install(templates)  # {{ taskcast_widget(...) }} and {{ taskcast_widget_assets() }}
EMBED = templates.from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>My app</title>{{ taskcast_widget_assets() }}</head>
<body><h1>My app</h1><p>Your answer is on its way:</p>
{{ taskcast_widget(task_id, view=view) }}
</body></html>"""
)

_running: set[asyncio.Task[None]] = set()


async def stream_answer(task_id: str) -> None:
    words = ANSWER.split(" ")
    for n, word in enumerate(words, 1):
        await engine.publish_events(
            task_id,
            [
                EventInput(
                    type="llm.delta",
                    data={"delta": word if n == 1 else " " + word},
                    series_id="answer",
                    series_mode="accumulate",
                ),
                EventInput(
                    type="progress",
                    data={"current": n, "total": len(words), "label": f"{n}/{len(words)} words"},
                    series_id="progress",
                    series_mode="latest",
                ),
            ],
        )
        await asyncio.sleep(DELAY)
    await engine.transition_task(task_id, "completed", result={"words": len(words)})


@app.get("/")
async def start() -> RedirectResponse:
    task = await engine.create_task(TaskInput(type="demo.answer"))
    await engine.transition_task(task.id, "running")
    job = asyncio.create_task(stream_answer(task.id))
    _running.add(job)
    job.add_done_callback(_running.discard)
    return RedirectResponse(f"/widget/tasks/{task.id}", status_code=303)


@app.get("/embed/{task_id}", response_class=HTMLResponse)
async def embed(task_id: str) -> HTMLResponse:
    # Templates render synchronously: read the task's current state first, then hand it
    # to the widget for the first paint (None renders an empty widget that fills itself).
    view = await widget.load_view(task_id)
    return HTMLResponse(EMBED.render(task_id=task_id, view=view))
