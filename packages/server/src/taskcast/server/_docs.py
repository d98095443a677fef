"""``GET /docs``: Swagger UI served from this package's dependencies, never from a CDN.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank on a machine
without internet access (an air-gapped cluster, a laptop on a plane). The assets come from
``swagger-ui-bundle-v2`` (Swagger UI 5, which reads the OpenAPI 3.1 document FastAPI
writes); the three files the page loads are served under ``/docs/assets/``, with the
app's prefix when it is mounted under one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from ._errors import ApiError

__all__ = ["ASSETS_PATH", "install_docs"]

ASSETS_PATH = "/docs/assets"
# Swagger UI's online validator badge would call a public validator service: off.
_PARAMETERS = {"validatorUrl": None}
# Only what the page loads: the bundle also holds source maps and a standalone index page.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` over ``/openapi.json``, with local assets."""
    root = Path(str(swagger_ui_path))

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        prefix = str(request.scope.get("root_path", "")).rstrip("/")
        assets = prefix + ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=prefix + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=prefix + _OAUTH2_REDIRECT,
            swagger_ui_parameters=_PARAMETERS,
        )

    @app.get(_OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def swagger_ui_asset(name: str) -> FileResponse:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise ApiError(404, "Not found")
        # Versioned with the package: cacheable, but revalidated after an upgrade.
        return FileResponse(
            root / name, media_type=media_type, headers={"Cache-Control": "no-cache"}
        )
