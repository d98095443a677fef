"""Taskcast HTTP API: a FastAPI app serving REST routes and SSE streams over a TaskEngine.

Served alone::

    engine = TaskEngine(short_term=MemoryShortTermStore())
    app = create_app(engine)            # uvicorn module:app

Mounted in another app, compose :func:`taskcast_lifespan` into the host's lifespan.
"""

from ._app import create_app, taskcast_lifespan
from ._auth import AuthContext, Authenticator, AuthError, NoAuth, auth_context
from ._config import ServerConfig
from ._sse import SSEResponse

__all__ = [
    "AuthContext",
    "AuthError",
    "Authenticator",
    "NoAuth",
    "SSEResponse",
    "ServerConfig",
    "auth_context",
    "create_app",
    "taskcast_lifespan",
]
