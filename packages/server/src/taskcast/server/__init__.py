"""FastAPI application: REST + SSE API, auth, webhooks."""

__all__: list[str] = []
