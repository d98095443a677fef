"""The ``taskcast`` command: run the server, resolve its configuration, talk to a server.

The command is :func:`main`; the configuration it resolves (flags > environment > file >
defaults) is a :class:`TaskcastSettings`, which :func:`build` turns into an engine and an
application. ``taskcast.cli._app:build_app`` is the application factory uvicorn's worker
processes call.
"""

import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:
    from ._build import Built, build, build_engine
    from ._errors import ConfigFileError, SettingsError, StartupError
    from ._files import CONFIG_FILE_NAMES, find_config_file, interpolate, load_config_file
    from ._logging import logging_config
    from ._main import app, main
    from ._resolve import ENV_VARS, default_db_path, load_settings, resolve_settings
    from ._serve import TaskcastServer, serve
    from ._settings import (
        AdapterSettings,
        AdaptersSettings,
        AuthSettings,
        JwtSettings,
        LimitsSettings,
        PostgresSettings,
        RedisSettings,
        TaskcastSettings,
        TrustedServiceSettings,
    )

    __version__: str
    """The installed version (every taskcast package of a release has the same one)."""

__all__ = [
    "CONFIG_FILE_NAMES",
    "ENV_VARS",
    "AdapterSettings",
    "AdaptersSettings",
    "AuthSettings",
    "Built",
    "ConfigFileError",
    "JwtSettings",
    "LimitsSettings",
    "PostgresSettings",
    "RedisSettings",
    "SettingsError",
    "StartupError",
    "TaskcastServer",
    "TaskcastSettings",
    "TrustedServiceSettings",
    "__version__",
    "app",
    "build",
    "build_engine",
    "default_db_path",
    "find_config_file",
    "interpolate",
    "load_config_file",
    "load_settings",
    "logging_config",
    "main",
    "resolve_settings",
    "serve",
]

# Each name is imported from its module on first use (PEP 562), so running `taskcast`
# (whose entry point imports this package) loads only what the command needs.
_MODULES = {
    "Built": "_build",
    "build": "_build",
    "build_engine": "_build",
    "ConfigFileError": "_errors",
    "SettingsError": "_errors",
    "StartupError": "_errors",
    "CONFIG_FILE_NAMES": "_files",
    "find_config_file": "_files",
    "interpolate": "_files",
    "load_config_file": "_files",
    "logging_config": "_logging",
    "app": "_main",
    "main": "_main",
    "ENV_VARS": "_resolve",
    "default_db_path": "_resolve",
    "load_settings": "_resolve",
    "resolve_settings": "_resolve",
    "TaskcastServer": "_serve",
    "serve": "_serve",
    "AdapterSettings": "_settings",
    "AdaptersSettings": "_settings",
    "AuthSettings": "_settings",
    "JwtSettings": "_settings",
    "LimitsSettings": "_settings",
    "PostgresSettings": "_settings",
    "RedisSettings": "_settings",
    "TaskcastSettings": "_settings",
    "TrustedServiceSettings": "_settings",
}


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value: object = version("taskcast-cli")
    elif name in _MODULES:
        value = getattr(_import_module(f".{_MODULES[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
