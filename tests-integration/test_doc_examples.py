"""Every ```python block of the docs and the READMEs, compiled, import-checked and (mostly) run.

A doc example that no longer matches the code is a doc bug, so each block is a test named by
``file:line``. Every block is compiled and each ``taskcast`` name it imports must exist. Then
it is run in its own interpreter against a live ``taskcast start`` (SQLite in a temporary
directory, auth off): the doc's ``http://127.0.0.1:3721`` becomes that server's URL, and the
few names a block takes from the surrounding prose (``engine``, ``task_id``, ...) are given by
an explicit prelude in :data:`PRELUDES`. A block that cannot run here is listed, with the
reason, in :data:`NOT_RUN`; it is still compiled and import-checked.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from itsupport import Server, startup_deadline
from psycopg import sql

from taskcast.core import new_id

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("TASKCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "TASKCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Block:
    """One fenced ```python block: where it starts (the first code line) and its text."""

    path: str
    line: int
    source: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def matches(self, key: tuple[str, str]) -> bool:
        return self.path == key[0] and key[1] in self.source


_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


def collect_blocks() -> list[Block]:
    files = sorted(
        [*ROOT.glob("docs/**/*.md"), ROOT / "README.md", *ROOT.glob("packages/*/README.md")]
    )
    blocks: list[Block] = []
    for file in files:
        lines = file.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            opened = _FENCE.match(lines[i])
            if opened is None:
                i += 1
                continue
            fence, lang = opened.group(1), opened.group(2).lower()
            indent = len(lines[i]) - len(lines[i].lstrip())
            end = i + 1
            while end < len(lines) and lines[end].strip() != fence:
                end += 1
            if lang in ("python", "py", "python3"):
                body = [line[indent:] for line in lines[i + 1 : end]]
                blocks.append(Block(str(file.relative_to(ROOT)), i + 2, "\n".join(body) + "\n"))
            i = end + 1
    return blocks


BLOCKS = collect_blocks()

# A well-formed DSN nothing listens at: the Sentry blocks initialise the SDK but report nothing.
DOC_SENTRY_DSN = "https://<key>@o0.ingest.sentry.io/<project>"
DEAD_SENTRY_DSN = "http://key@127.0.0.1:9/1"

# Blocks that are compiled and import-checked but not run, keyed by (file, a phrase of the
# block), with why they cannot run here.
NOT_RUN: dict[tuple[str, str], str] = {
    ("docs/performance.md", "OTLPMetricExporter"): (
        "needs opentelemetry-exporter-otlp, which is not a dependency of any package"
    ),
    ("packages/sentry/README.md", 'os.environ.get("SENTRY_DSN"'): (
        "a fragment of the CLI's start-up; `TaskEngine(..., hooks=hooks)` is a placeholder"
    ),
}

# What a block takes from the surrounding prose, set up in the block's namespace before it
# runs. `_URL` is the live server's URL, `_POSTGRES_URL` the test database with a fresh
# schema as its search_path; `_finished_task(id)` makes sure a completed task
# with that id and a few `llm.delta` events exists; `_serve_defaults_from(_URL)` points the
# clients' default base URL (the doc's server) at the live server.
HELPERS = """
from taskcast.server_sdk import ConflictError as _ConflictError
from taskcast.server_sdk import TaskcastServerClient as _ServerClient


def _finished_task(task_id):
    with _ServerClient(_URL) as c:
        try:
            c.create_task(id=task_id, type="llm.chat")
        except _ConflictError:
            return task_id
        with c.run(task_id) as run:
            run.publish_stream(["Hel", "lo", "!"])
    return task_id


def _serve_defaults_from(url):
    from taskcast.client import AsyncTaskcastClient, TaskcastClient
    from taskcast.server_sdk import AsyncTaskcastServerClient, TaskcastServerClient

    for cls in (AsyncTaskcastClient, TaskcastClient, AsyncTaskcastServerClient,
                TaskcastServerClient):
        assert cls.__init__.__defaults__ == ("http://127.0.0.1:3721",), cls
        cls.__init__.__defaults__ = (url,)
"""

_ENGINE = """
from taskcast.core import MemoryShortTermStore, TaskEngine
from taskcast.server import create_app
engine = TaskEngine(short_term=MemoryShortTermStore())
"""
_JOB_1 = '_finished_task("job-1")\n'

PRELUDES: dict[tuple[str, str], str] = {
    ("docs/api/authentication.md", 'os.environ["BILLING_KEY"]'): _ENGINE
    + """
import os
os.environ["TASKCAST_JWT_SECRET"] = "a-secret-of-at-least-32-bytes!!!"
os.environ["BILLING_KEY"] = "billing-service-key"
""",
    ("docs/api/authentication.md", "CustomAuthenticator(check)"): _ENGINE + "sessions = None\n",
    ("docs/api/authentication.md", "AdminConfig.for_jwt"): """
import os
from fastapi import FastAPI
from taskcast.server import JWTConfig
jwt_config = JWTConfig(secret="a-secret-of-at-least-32-bytes!!!")
app = FastAPI()
""",
    ("docs/api/authentication.md", "mint_subscribe_token(JWT_SECRET"): """
JWT_SECRET = "a-secret-of-at-least-32-bytes!!!"
task_id = "t1"
""",
    ("docs/api/authentication.md", "response.set_cookie("): """
from starlette.responses import Response
response = Response()
token = "a-token"
""",
    ("docs/api/webhooks.md", "default_retry=WebhookRetry"): _ENGINE,
    ("docs/guide/archives.md", "export_task_archive(task.id)) + "): """
import json
from taskcast.server_sdk import TaskcastServerClient
src = TaskcastServerClient(_URL)
_finished_task("job-1")
""",
    ("docs/guide/archives.md", "import_task_archive(archive)"): """
TOKEN = None
_finished_task("job-1")
""",
    ("docs/guide/deployment.md", "long_term=postgres_archive"): """
from taskcast.core import MemoryBroadcast, MemoryLongTermStore, MemoryShortTermStore
redis_store, redis_broadcast = MemoryShortTermStore(), MemoryBroadcast()
postgres_archive = MemoryLongTermStore()
""",
    ("docs/guide/getting-started.md", ".subscribe(task.id):"): """
from taskcast.server_sdk import TaskcastServerClient
with TaskcastServerClient(_URL) as _c:
    task = _c.get_task(_finished_task("job-1"))
""",
    ("docs/sdk/client.md", 'asyncio.run(follow("job-1"))'): _JOB_1,
    ("docs/sdk/client.md", 'types=["llm.*"]) as subscription'): _JOB_1,
    ("docs/sdk/client.md", "on_resync=lambda r"): _JOB_1 + "_serve_defaults_from(_URL)\n",
    ("docs/sdk/client.md", "series_format=None,    #"): """
from taskcast.client import TaskcastClient
client = TaskcastClient(_URL)
task_id = _finished_task("job-1")
""",
    ("docs/sdk/client.md", "my_auth_service.new_taskcast_token()"): """
import types
from taskcast.client import TaskcastClient
my_auth_service = types.SimpleNamespace(new_taskcast_token=lambda: None)
initial_token = "a-token"
""",
    ("docs/sdk/client.md", "is_what_i_wanted(item)"): """
from taskcast.client import AsyncTaskcastClient
client = AsyncTaskcastClient(_URL)
task_id = _finished_task("job-1")
is_what_i_wanted = lambda item: True
""",
    ("docs/sdk/server-sdk.md", 'extra={"cost": 2}'): "_serve_defaults_from(_URL)\n",
    ("docs/sdk/server-sdk.md", "except ConflictError as exc"): "_serve_defaults_from(_URL)\n",
    ("docs/sdk/server-sdk.md", 'result={"default": True}'): """
from taskcast.server_sdk import TaskcastServerClient
client = TaskcastServerClient(_URL)
task_id = client.create_task().id
""",
    ("docs/sdk/server-sdk.md", "max_batch_chars=2048"): """
from taskcast.server_sdk import TaskcastServerClient
client = TaskcastServerClient(_URL)
task_id = client.create_task().id
client.transition_task(task_id, "running")
chunks = ["Hel", "lo"]
""",
    ("docs/skill/taskcast.md", "run.publish_stream(llm_chunks())"): """
def llm_chunks():
    yield from ("Hel", "lo")
""",
    ("docs/skill/taskcast.md", "widget.install(jinja_env)"): """
import jinja2
from fastapi import FastAPI
app = FastAPI()
jinja_env = jinja2.Environment()
""",
    ("docs/skill/taskcast.md", "print(sub.done_reason)"): 'task_id = _finished_task("job-1")\n',
    ("packages/client/README.md", 'asyncio.run(main("job-1"))'): _JOB_1,
    ("packages/core/README.md", "short_term=hot"): """
from taskcast.core import MemoryBroadcast, MemoryLongTermStore, MemoryShortTermStore
hot, broadcast, archive = MemoryShortTermStore(), MemoryBroadcast(), MemoryLongTermStore()
""",
    ("packages/sentry/README.md", 'os.environ["SENTRY_DSN"]'): f"""
import os
os.environ["SENTRY_DSN"] = {DEAD_SENTRY_DSN!r}
""",
    ("packages/postgres/README.md", "on_progress=cb)"): "url = _POSTGRES_URL\ncb = print\n",
    ("packages/postgres/README.md", "code = run_migrate_command("): (
        "url = _POSTGRES_URL\nyes = True\n"
    ),
    ("packages/sentry/README.md", "capture_task_timeouts=False"): (
        "from taskcast.sentry import SentryOptions, sentry_hooks\n"
    ),
    ("packages/server/README.md", "allow_private=False,  # default"): _ENGINE,
    ("packages/server-sdk/README.md", "{public_url}/tasks/{task_id}"): """
public_url = "https://tasks.example"
task_id = "t1"
SECRET = "a-secret-of-at-least-32-bytes!!!"
""",
    ("packages/sqlite/README.md", "cache_bytes=32 << 20"): """
from taskcast.sqlite import SQLiteStore
path = "data/taskcast.db"
""",
    ("packages/widget/README.md", "widget.install(templates.env)"): """
from fastapi.templating import Jinja2Templates
templates = Jinja2Templates(directory=".")
""",
}

# Doc URLs that stand for the live servers and services of this test.
SERVER_URLS = ("http://127.0.0.1:3721", "http://localhost:3721", "http://laptop:3721")
SECOND_SERVER_URL = "https://prod.example"  # the import target in docs/guide/archives.md
# The Redis block only opens and closes an engine (a PING and a SUBSCRIBE), so its default
# key prefix leaves nothing in the shared Redis.
DOC_REDIS_URL = "redis://127.0.0.1:6379/0"
DOC_POSTGRES_URL = "postgresql://taskcast@db.internal:5432/taskcast"

# Compiles a file with top-level `await` allowed (README fragments use it) and runs it in
# one namespace; the doc's line numbers are kept so a traceback names the doc's line. A block
# that leaves an ASGI `app` has it served by uvicorn (its lifespan must start and stop: that
# is what the mounting examples are about) and prints what /health and /taskcast/health say.
RUNNER = """
import ast, asyncio, inspect, sys
ns = {"__name__": "__main__"}
for path, name in zip(sys.argv[1::2], sys.argv[2::2]):
    code = compile(open(path).read(), name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)
    if inspect.iscoroutine(result):
        asyncio.run(result)


async def serve(app):
    import httpx, uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            sys.exit("uvicorn stopped before it started (the app's lifespan failed?)")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        codes = {path: (await http.get(path)).status_code
                 for path in ("/health", "/taskcast/health")}
    server.should_exit = True
    await serving
    print("served:", codes)


if hasattr(ns.get("app"), "router"):
    asyncio.run(serve(ns["app"]))
"""


def _lookup(table: dict[tuple[str, str], str], block: Block) -> str | None:
    hits = [value for key, value in table.items() if block.matches(key)]
    assert len(hits) <= 1, f"{block.id} matches several entries"
    return hits[0] if hits else None


def test_blocks_are_found() -> None:
    files = {block.path for block in BLOCKS}
    assert "packages/client/README.md" in files and "docs/sdk/client.md" in files
    assert len(BLOCKS) >= 50


@pytest.mark.parametrize("key", [*NOT_RUN, *PRELUDES], ids=lambda key: f"{key[0]}|{key[1]}")
def test_every_table_entry_names_exactly_one_block(key: tuple[str, str]) -> None:
    matching = [block.id for block in BLOCKS if block.matches(key)]
    assert len(matching) == 1, f"{key} matches {matching or 'no block'}"
    assert not (key in NOT_RUN and key in PRELUDES)


def _imports(tree: ast.AST) -> Iterator[tuple[str, str | None]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("taskcast"):
            for alias in node.names:
                yield str(node.module), alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("taskcast"):
                    yield alias.name, None


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.id)
def test_block_compiles_and_its_imports_exist(block: Block) -> None:
    source = "\n" * (block.line - 1) + block.source
    tree = compile(
        source,
        block.path,
        "exec",
        flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    compile(tree, block.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    for module_name, name in _imports(tree):
        module = importlib.import_module(module_name)
        if name is not None and not hasattr(module, name):
            # `from taskcast import server`: a subpackage is a name only once imported.
            importlib.import_module(f"{module_name}.{name}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("docs-server") / "taskcast.db"
    live = Server(["--storage", "sqlite", "--db-path", str(db)]).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def second_server() -> Iterator[Server]:
    live = Server(["--storage", "memory"]).start()
    yield live
    live.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The test database with a throw-away schema as its search_path (dropped afterwards)."""
    schema = f"tc_docs_{new_id().lower()}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.OperationalError as exc:  # as packages/postgres/tests/conftest.py
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


RUN_BLOCKS = [block for block in BLOCKS if _lookup(NOT_RUN, block) is None]


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda block: block.id)
def test_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    live: Server = request.getfixturevalue("server")
    replacements = dict.fromkeys(SERVER_URLS, live.url)
    prelude = _lookup(PRELUDES, block) or ""
    if SECOND_SERVER_URL in block.source:
        replacements[SECOND_SERVER_URL] = request.getfixturevalue("second_server").url
    replacements[DOC_REDIS_URL] = REDIS_URL
    replacements[DOC_SENTRY_DSN] = DEAD_SENTRY_DSN
    pg_url = ""
    if "taskcast.postgres" in block.source:
        pg_url = request.getfixturevalue("postgres_url")
        replacements[DOC_POSTGRES_URL] = pg_url

    source = block.source
    for doc_url, url in replacements.items():
        source = source.replace(doc_url, url)
    setup = f"_URL = {live.url!r}\n_POSTGRES_URL = {pg_url!r}\n{HELPERS}\n{prelude}"
    (tmp_path / "setup.py").write_text(setup)
    (tmp_path / "block.py").write_text("\n" * (block.line - 1) + source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCAST_")}
    args = [str(tmp_path / "setup.py"), "<prelude>", str(tmp_path / "block.py"), block.path]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=startup_deadline(),
    )
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
    served = re.search(r"^served: (.*)$", done.stdout, re.MULTILINE)
    if served is not None:
        codes: dict[str, int] = ast.literal_eval(served.group(1))
        assert max(codes.values()) < 500, f"{block.id}: {codes}\n{done.stderr}"
        if "create_app(" in block.source:
            assert 200 in codes.values(), f"{block.id}: the Taskcast app is not served: {codes}"
