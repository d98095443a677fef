"""PostgreSQL long-term store with SQL migrations."""

__all__: list[str] = []
