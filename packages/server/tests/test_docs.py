"""``/docs`` works with no network: every URL the page loads is the server's own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from taskcast.core import TaskEngine
from taskcast.server import create_app, taskcast_lifespan

from .conftest import serve

pytestmark = pytest.mark.anyio

# src="...", href="...", and Swagger UI's url: '...' and
# oauth2RedirectUrl: window.location.origin + '...'.
_URLS = re.compile(
    r"""(?:src|href)="([^"]+)"|"""
    r"""(?:url|oauth2RedirectUrl)["']?:\s*(?:window\.location\.origin \+ )?['"]([^'"]+)['"]"""
)


def page_urls(html: str) -> list[str]:
    return [a or b for a, b in _URLS.findall(html)]


async def check_docs(client: httpx.AsyncClient, prefix: str) -> None:
    r = await client.get(prefix + "/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    urls = page_urls(r.text)
    # The stylesheet, the favicon, the script, the OpenAPI document, the OAuth2 redirect.
    assert len(urls) == 5, urls
    for url in urls:
        assert url.startswith(prefix + "/") and not url.startswith("//"), url
        assert "://" not in url, url
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert answer.content, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts == [prefix + "/docs/assets/swagger-ui-bundle.js"]
    body = (await client.get(scripts[0])).text
    assert "SwaggerUIBundle" in body
    # Swagger UI 5 reads OpenAPI 3.1 (4.x shows "Unable to render this definition").
    assert (await client.get(prefix + "/openapi.json")).json()["openapi"].startswith("3.1")


async def test_docs_page_loads_only_local_assets(live: httpx.AsyncClient) -> None:
    await check_docs(live, "")


async def test_docs_page_under_a_mount_prefix(engine: TaskEngine) -> None:
    taskcast = create_app(engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with taskcast_lifespan(engine, taskcast):
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/taskcast", taskcast)
    async with serve(host, engine) as url, httpx.AsyncClient(base_url=url) as client:
        await check_docs(client, "/taskcast")


async def test_only_the_pages_assets_are_served(live: httpx.AsyncClient) -> None:
    for name in ("index.html", "swagger-ui-bundle.js.map", "..%2F__init__.py", "nope.js"):
        r = await live.get("/docs/assets/" + name)
        assert (r.status_code, r.json()) == (404, {"error": "Not found"}), name
