"""Live task view for server-rendered pages: Jinja2 templates and vendored htmx."""

__all__: list[str] = []
