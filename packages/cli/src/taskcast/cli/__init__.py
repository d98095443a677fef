"""The ``taskcast`` command: run the server, resolve its configuration, talk to a server.

The command is :func:`main`; the configuration it resolves (flags > environment > file >
defaults) is a :class:`TaskcastSettings`, which :func:`build` turns into an engine and an
application. ``taskcast.cli._app:build_app`` is the application factory uvicorn's worker
processes call.
"""

from importlib.metadata import version as _dist_version

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

__version__: str = _dist_version("taskcast-cli")
"""The installed version (every taskcast package of a release has the same one)."""
