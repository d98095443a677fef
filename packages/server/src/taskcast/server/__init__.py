"""Taskcast HTTP API: a FastAPI app serving REST routes and SSE streams over a TaskEngine.

Served alone::

    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(engine)            # uvicorn module:app

Mounted in another app, compose :func:`taskcast_lifespan` into the host's lifespan.
"""

from importlib.metadata import version as _dist_version

from ._admin import AdminConfig, admin_router
from ._app import create_app, taskcast_lifespan
from ._auth import (
    AuthContext,
    Authenticator,
    AuthError,
    CompositeAuthenticator,
    CustomAuthenticator,
    NoAuth,
    TrustedService,
    auth_context,
    build_authenticator,
)
from ._config import ServerConfig
from ._jwt import JWTAuthenticator, JWTConfig
from ._sse import SSEResponse
from ._tokens import mint_subscribe_token, mint_token
from ._webhooks import (
    WebhookDeliveryError,
    WebhookDispatcher,
    WebhookObserver,
    WebhookRefusedError,
    WebhookSettings,
    sign_headers,
)

__all__ = [
    "AdminConfig",
    "AuthContext",
    "AuthError",
    "Authenticator",
    "CompositeAuthenticator",
    "CustomAuthenticator",
    "JWTAuthenticator",
    "JWTConfig",
    "NoAuth",
    "SSEResponse",
    "ServerConfig",
    "TrustedService",
    "WebhookDeliveryError",
    "WebhookDispatcher",
    "WebhookObserver",
    "WebhookRefusedError",
    "WebhookSettings",
    "__version__",
    "admin_router",
    "auth_context",
    "build_authenticator",
    "create_app",
    "mint_subscribe_token",
    "mint_token",
    "sign_headers",
    "taskcast_lifespan",
]

__version__: str = _dist_version("taskcast-server")
"""The installed version (every taskcast package of a release has the same one)."""
