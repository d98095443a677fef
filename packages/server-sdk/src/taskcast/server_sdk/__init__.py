"""Sync and async REST client for Taskcast servers."""

__all__: list[str] = []
