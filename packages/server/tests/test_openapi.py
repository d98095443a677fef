"""``/openapi.json`` documents every route fully: a response schema and an example for each
operation, a description for every field, the service routes and the SSE frames, and the
path parameter named ``{id}`` as in docs/api/rest.md."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from taskcast.core import MemoryShortTermStore, TaskEngine
from taskcast.server import AdminConfig, ServerConfig, admin_router, create_app

from .conftest import serve

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-for-openapi-tests-0123"
SERVICE = {
    ("get", "/"),
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/health/detail"),
    ("get", "/metrics"),
    ("post", "/admin/token"),
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(engine, config=ServerConfig(metrics=True))
    app.include_router(admin_router(AdminConfig(enabled=True, admin_token=ADMIN)))
    async with serve(app, engine) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        yield client, r.json()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return resolve(doc, doc["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    return schema


async def test_every_operation_has_response_schemas_and_examples(
    served: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    _, doc = served
    seen = set()
    for method, path, operation in operations(doc):
        seen.add((method, path))
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        ok = [code for code in responses if code.startswith("2")]
        assert ok, where
        for code in ok:
            content = responses[code].get("content", {})
            if code == "204":
                assert not content, where
                continue
            assert content, f"{where} {code}: no response body documented"
            for media_type, media in content.items():
                assert media.get("schema"), f"{where} {code} {media_type}: no schema"
                assert "example" in media, f"{where} {code} {media_type}: no example"
        for code, response in responses.items():
            if not code.startswith("2"):
                assert response.get("description"), f"{where} {code}"
                for media in response.get("content", {}).values():
                    assert media.get("schema"), f"{where} {code}: no schema"
        if "requestBody" in operation:
            for media in operation["requestBody"]["content"].values():
                assert media.get("schema") and "example" in media, f"{where}: request body"
    assert seen >= SERVICE


def walk(
    doc: dict[str, Any], schema: dict[str, Any], where: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of ``schema`` (nested objects, arrays and unions included)."""
    for name, prop in (schema.get("properties") or {}).items():
        yield f"{where}.{name}", prop
        yield from walk(doc, prop, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from walk(doc, schema[key], f"{where}[]")
    for key in ("oneOf", "anyOf", "allOf"):
        for option in schema.get(key, []):
            yield from walk(doc, option, where)


async def test_every_field_has_a_description(
    served: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    _, doc = served
    missing = []
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        assert schema.get("description"), f"{name}: no description"
        for where, prop in walk(doc, schema, name):
            if not prop.get("description") and not resolve(doc, prop).get("description"):
                missing.append(where)
    for method, path, operation in operations(doc):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), f"{method} {path} {parameter['name']}"
        # Schemas written inline in a route, not as a component.
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for media in body.get("content", {}).values():
                for where, prop in walk(doc, media.get("schema", {}), f"{method} {path}"):
                    if not prop.get("description") and not resolve(doc, prop).get("description"):
                        missing.append(where)
    assert missing == []


async def test_service_routes_and_sse_frames_are_documented(
    served: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, doc = served
    paths = doc["paths"]
    for method, path in SERVICE:
        media = paths[path][method]["responses"]["200"]["content"]
        (schema,) = (m["schema"] for m in media.values())
        assert resolve(doc, schema).get("properties") or schema.get("type") == "string", path
    # Each documented example is what the route really answers, key for key.
    for path in ("/", "/health", "/health/ready", "/health/detail"):
        media = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        real = (await client.get(path)).json()
        assert set(real) <= set(resolve(doc, media["schema"])["properties"]), path
        assert set(media["example"]) <= set(real) | {"archive"}, path
    token = await client.post("/admin/token", json={"adminToken": ADMIN})
    admin = paths["/admin/token"]["post"]
    assert set(token.json()) == set(
        admin["responses"]["200"]["content"]["application/json"]["example"]
    )
    assert admin["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AdminTokenBody"
    )
    for path in ("/tasks/{id}/events", "/events"):
        media = paths[path]["get"]["responses"]["200"]["content"]["text/event-stream"]
        frame = resolve(doc, media["schema"])
        assert set(frame["properties"]["event"]["enum"]) == {
            "taskcast.event",
            "taskcast.done",
            "taskcast.resync",
        }
        shapes = {resolve(doc, s).get("title") for s in frame["properties"]["data"]["anyOf"]}
        assert shapes == {"EventEnvelope", "EventOut", "DoneFrame", "ResyncFrame"}
        assert "event: taskcast.done" in media["example"]


async def test_the_path_parameter_is_id_and_the_urls_are_unchanged(
    served: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, doc = served
    assert not [path for path in doc["paths"] if "{task_id}" in path]
    for method, path, operation in operations(doc):
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert names == (["id"] if "{id}" in path else []), f"{method} {path}"
    created = await client.post("/tasks", json={"id": "doc-task"})
    assert created.status_code == 201
    for path in ("/tasks/{id}", "/tasks/{id}/events/history"):
        r = await client.get(path.replace("{id}", "doc-task"))
        assert r.status_code == 200, path
