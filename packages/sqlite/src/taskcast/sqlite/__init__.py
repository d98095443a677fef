"""Embedded SQLite short- and long-term store (the CLI's default)."""

__all__: list[str] = []
