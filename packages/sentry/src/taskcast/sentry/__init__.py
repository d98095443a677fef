"""Sentry integration driven by Taskcast engine hooks."""

__all__: list[str] = []
