"""The `taskcast` command: server, migrations and client commands."""

__all__: list[str] = []
