"""The web app: asks a question, creates a Taskcast task for it, and shows the live answer.

Run it next to a Taskcast server (``TASKCAST_URL``, default http://127.0.0.1:3721, started
with ``--cors-origin`` naming this app's origin) and a worker (``chat_worker.py``)::

    uv run uvicorn --app-dir examples/llm_chat chat_app:app --port 8000

``GET /`` is a question form; ``POST /chat`` creates an ``llm.chat`` task and redirects to
``GET /chat/{task_id}``, a page with the live task widget. The browser follows the task's
stream straight from the Taskcast server; refresh the page at any time.

With ``TASKCAST_JWT_SECRET`` set (the server's ``auth.jwt.secret``), each page carries a
subscribe token for its one task (``?token=`` on the stream URL: a browser's EventSource
cannot send headers), and the app itself authenticates with ``TASKCAST_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from taskcast.server_sdk import AsyncTaskcastServerClient, NotFoundError, mint_subscribe_token
from taskcast.widget import TaskcastWidget, WidgetConfig

TASKCAST_URL = os.environ.get("TASKCAST_URL", "http://127.0.0.1:3721").rstrip("/")
"""The Taskcast server, as this app and the browser reach it (they may differ in your
deployment: then set ``TASKCAST_PUBLIC_URL`` for the browser)."""
PUBLIC_URL = os.environ.get("TASKCAST_PUBLIC_URL", TASKCAST_URL).rstrip("/")
JWT_SECRET = os.environ.get("TASKCAST_JWT_SECRET") or None


def _browser_token(task_id: str) -> str:
    assert JWT_SECRET is not None
    # Valid long enough for the answer to stream; a refresh renders a fresh one.
    return mint_subscribe_token(JWT_SECRET, task_id, ttl_seconds=600)


widget = TaskcastWidget(
    WidgetConfig(
        taskcast_url=PUBLIC_URL,
        title="Answer",
        token_factory=_browser_token if JWT_SECRET else None,
    )
)
templates = Environment(autoescape=True)
widget.install(templates)

LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Taskcast chat</title>
{{ taskcast_widget_assets() }}
<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
textarea{width:100%;font:inherit}</style></head>
<body><h1><a href="/">Taskcast chat</a></h1>{% block body %}{% endblock %}</body></html>"""
ASK = templates.from_string(
    LAYOUT.replace(
        "{% block body %}{% endblock %}",
        """<form method="post" action="/chat">
<p><label for="prompt">Your question</label></p>
<textarea id="prompt" name="prompt" rows="3" required>What is Taskcast?</textarea>
<p><button type="submit">Ask</button></p></form>""",
    )
)
CHAT = templates.from_string(
    LAYOUT.replace(
        "{% block body %}{% endblock %}",
        """<p class="question"><strong>You:</strong> {{ prompt }}</p>
{{ taskcast_widget(task_id) }}
<p><a href="/">Ask another question</a> · refresh this page any time.</p>""",
    )
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    token = os.environ.get("TASKCAST_TOKEN") or None
    async with AsyncTaskcastServerClient(TASKCAST_URL, token=token) as client:
        app.state.taskcast = client
        yield


app = FastAPI(lifespan=lifespan)
# The widget's script and stylesheet (its page routes are unused: this app renders its own).
widget.mount(app)


@app.get("/", response_class=HTMLResponse)
async def ask() -> HTMLResponse:
    return HTMLResponse(ASK.render())


@app.post("/chat")
async def chat(request: Request) -> Response:
    # A plain form post, parsed by hand (FastAPI's Form needs python-multipart).
    form = parse_qs((await request.body()).decode("utf-8"))
    prompt = (form.get("prompt") or [""])[0].strip()
    if not prompt:
        return RedirectResponse("/", status_code=303)
    client: AsyncTaskcastServerClient = request.app.state.taskcast
    # The task outlives this request: a worker answers it, the browser follows it.
    task = await client.create_task(type="llm.chat", params={"prompt": prompt}, ttl=3600)
    return RedirectResponse(f"/chat/{task.id}", status_code=303)


@app.get("/chat/{task_id}", response_class=HTMLResponse)
async def show(request: Request, task_id: str) -> HTMLResponse:
    client: AsyncTaskcastServerClient = request.app.state.taskcast
    try:
        task = await client.get_task(task_id)
    except NotFoundError:
        return HTMLResponse("<h1>No such chat</h1>", status_code=404)
    prompt = str((task.params or {}).get("prompt", ""))
    # No first paint from the server here (the widget's state comes from the stream): the
    # script replays the task's history, collapsed, then follows it live.
    return HTMLResponse(
        CHAT.render(task_id=task_id, prompt=prompt), headers={"Cache-Control": "no-store"}
    )
