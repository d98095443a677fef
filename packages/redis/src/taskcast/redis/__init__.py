"""Redis broadcast provider and short-term store."""

__all__: list[str] = []
