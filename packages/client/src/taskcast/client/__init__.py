"""Subscribe to Taskcast task streams with automatic resume."""

__all__: list[str] = []
