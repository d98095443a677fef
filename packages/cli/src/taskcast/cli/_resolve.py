"""How ``taskcast start`` assembles its settings, and says where a bad value came from.

Three layers feed one :class:`TaskcastSettings`, highest priority first: command-line flags,
environment variables (the original's flat ``TASKCAST_*`` names, see :data:`ENV_VARS`), then
the configuration file; whatever none of them sets keeps its default. pydantic-settings merges
the layers and validates the result once; a validation error is traced back to the layer that
supplied the value, so the message names the flag, the variable, or the file and key at fault.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ._errors import ConfigFileError, SettingsError
from ._settings import _ACTIVE_LAYERS, Layer, StorageMode, TaskcastSettings

__all__ = [
    "ENV_VARS",
    "default_db_path",
    "describe_error",
    "env_layer",
    "file_layer",
    "flags_layer",
    "load_settings",
    "normalize",
    "resolve_settings",
]


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``annotation`` (``X``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            found = _section_of(arg)
            if found is not None:
                return found
    return None


def _field_index(model: type[BaseModel]) -> dict[str, str]:
    index: dict[str, str] = {}
    for name, info in model.model_fields.items():
        if name == "extras":
            continue
        index[name] = name
        if info.alias:
            index[info.alias] = name
    return index


def normalize(
    model: type[BaseModel],
    data: Mapping[str, Any],
    origins: dict[tuple[str | int, ...], str],
    *,
    path: tuple[str | int, ...] = (),
    written: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Rename camelCase/snake_case keys to field names, recording where each value came from.

    Unknown keys are kept as written so that validation reports them.
    """
    index = _field_index(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = index.get(key, key)
        annotation = model.model_fields[name].annotation if name in index else None
        section = _section_of(annotation)
        item = _item_section_of(annotation)
        if section is not None and isinstance(value, Mapping):
            out[name] = normalize(
                section, value, origins, path=(*path, name), written=(*written, key)
            )
            continue
        origins[(*path, name)] = ".".join((*written, key))
        if item is not None and isinstance(value, list):
            # Lists of sections (trustedServices): each element's keys are renamed too.
            out[name] = [
                normalize(
                    item,
                    element,
                    origins,
                    path=(*path, name, i),
                    written=(f"{'.'.join((*written, key))}[{i}]",),
                )
                if isinstance(element, Mapping)
                else element
                for i, element in enumerate(value)
            ]
        else:
            out[name] = value
    return out


def _item_section_of(annotation: Any) -> type[BaseModel] | None:
    """``X`` for ``list[X]`` where X is a section."""
    if get_origin(annotation) is list:
        (arg,) = get_args(annotation)
        return _section_of(arg)
    return None


# -- environment -------------------------------------------------------------------------

ENV_VARS: dict[str, tuple[str, ...]] = {
    "TASKCAST_HOST": ("host",),
    "TASKCAST_PORT": ("port",),
    "TASKCAST_LOG_LEVEL": ("log_level",),
    "TASKCAST_ACCESS_LOG": ("access_log",),
    "TASKCAST_STORAGE": ("storage",),
    "TASKCAST_SQLITE_PATH": ("db_path",),
    "TASKCAST_HEARTBEAT_SECONDS": ("heartbeat_seconds",),
    "TASKCAST_RETRY_MS": ("retry_ms",),
    "TASKCAST_SSE_WRITE_TIMEOUT": ("write_timeout_seconds",),
    "TASKCAST_SHUTDOWN_TIMEOUT_SECONDS": ("shutdown_timeout_seconds",),
    "TASKCAST_STARTUP_TIMEOUT_SECONDS": ("startup_timeout_seconds",),
    "TASKCAST_PROCESSES": ("processes",),
    "TASKCAST_CORS_ORIGINS": ("cors",),
    "TASKCAST_MAX_BODY_BYTES": ("limits", "max_body_bytes"),
    "TASKCAST_MAX_DATA_BYTES": ("limits", "max_data_bytes"),
    "TASKCAST_MAX_IMPORT_BYTES": ("limits", "max_import_bytes"),
    "TASKCAST_MAX_BATCH": ("limits", "max_batch"),
    "TASKCAST_MAX_ID_CHARS": ("limits", "max_id_chars"),
    "TASKCAST_MAX_NAME_CHARS": ("limits", "max_name_chars"),
    "TASKCAST_DEFAULT_PAGE_SIZE": ("limits", "default_page_size"),
    "TASKCAST_MAX_PAGE_SIZE": ("limits", "max_page_size"),
    "TASKCAST_QUEUE_LIMIT": ("limits", "queue_limit"),
    "TASKCAST_EVENT_CACHE_BYTES": ("limits", "event_cache_bytes"),
    "TASKCAST_MAX_HEADER_BYTES": ("limits", "max_header_bytes"),
    "TASKCAST_MAX_HEADERS": ("limits", "max_headers"),
    "TASKCAST_MAX_URL_BYTES": ("limits", "max_url_bytes"),
    "TASKCAST_HEADER_TIMEOUT_SECONDS": ("limits", "header_timeout_seconds"),
    "TASKCAST_MAX_CONNECTIONS": ("limits", "max_connections"),
    "TASKCAST_AUTH_MODE": ("auth", "mode"),
    "TASKCAST_JWT_ALGORITHM": ("auth", "jwt", "algorithm"),
    "TASKCAST_JWT_SECRET": ("auth", "jwt", "secret"),
    "TASKCAST_JWT_PUBLIC_KEY": ("auth", "jwt", "public_key"),
    "TASKCAST_JWT_PUBLIC_KEY_FILE": ("auth", "jwt", "public_key_file"),
    "TASKCAST_JWT_JWKS_URL": ("auth", "jwt", "jwks_url"),
    "TASKCAST_JWT_ISSUER": ("auth", "jwt", "issuer"),
    "TASKCAST_JWT_AUDIENCE": ("auth", "jwt", "audience"),
    "TASKCAST_REDIS_URL": ("adapters", "broadcast", "url"),
    "TASKCAST_REDIS_PREFIX": ("redis", "prefix"),
    "TASKCAST_POSTGRES_URL": ("adapters", "long_term_store", "url"),
    "TASKCAST_POSTGRES_MAX_CONNECTIONS": ("postgres", "max_connections"),
    "TASKCAST_POSTGRES_SCHEMA": ("postgres", "schema_name"),
    "TASKCAST_AUTO_MIGRATE": ("postgres", "auto_migrate"),
    "TASKCAST_ADMIN_TOKEN": ("admin_token",),
    "TASKCAST_ADMIN_TOKEN_MAX_EXPIRES_IN": ("admin_token_max_expires_in",),
    "TASKCAST_ADMIN_TOKEN_MAX_FAILURES": ("admin_token_max_failures",),
    "TASKCAST_ADMIN_TOKEN_FAILURE_WINDOW_SECONDS": ("admin_token_failure_window_seconds",),
    "TASKCAST_ADMIN_TOKEN_MAX_CLIENTS": ("admin_token_max_clients",),
    "TASKCAST_HOT_RETENTION_ENABLED": ("storage_lifecycle", "hot_retention_enabled"),
    "TASKCAST_HOT_RETENTION_TERMINAL_SECONDS": (
        "storage_lifecycle",
        "hot_retention_terminal_seconds",
    ),
    "TASKCAST_HOT_RETENTION_IDLE_SECONDS": ("storage_lifecycle", "hot_retention_idle_seconds"),
    "TASKCAST_TTL_SWEEP_INTERVAL_SECONDS": ("storage_lifecycle", "ttl_sweep_interval_seconds"),
    "TASKCAST_TTL_SWEEP_BATCH_SIZE": ("storage_lifecycle", "ttl_sweep_batch_size"),
    "TASKCAST_ARCHIVE_CHECK_INTERVAL_SECONDS": (
        "storage_lifecycle",
        "archive_check_interval_seconds",
    ),
    "TASKCAST_ARCHIVE_CHECK_GRACE_SECONDS": ("storage_lifecycle", "archive_check_grace_seconds"),
    "TASKCAST_WEBHOOK_ALLOW_PRIVATE": ("webhook", "allow_private"),
    "TASKCAST_METRICS": ("metrics",),
    "TASKCAST_OPENTELEMETRY": ("opentelemetry",),
    "SENTRY_DSN": ("sentry_dsn",),
}
"""Environment variable → settings path. Empty values count as unset."""

# TASKCAST_REDIS_URL serves both Redis roles, as in the original.
_ENV_ALSO = {"TASKCAST_REDIS_URL": (("adapters", "short_term_store", "url"),)}


def _put(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def env_layer(environ: Mapping[str, str]) -> Layer:
    """The settings the environment supplies."""
    layer = Layer(kind="env")
    for var, path in ENV_VARS.items():
        value = environ.get(var, "").strip()
        if not value:
            continue
        for target in (path, *_ENV_ALSO.get(var, ())):
            _put(layer.data, target, value)
            layer.origins[tuple(target)] = var
    return layer


def flags_layer(flags: Mapping[str, Any]) -> Layer:
    """The settings given on the command line; ``flags`` maps settings paths (dotted) to
    ``(flag name, value)`` for the flags the user actually passed."""
    layer = Layer(kind="flags")
    for dotted, (flag, value) in flags.items():
        path = tuple(dotted.split("."))
        _put(layer.data, path, value)
        layer.origins[path] = flag
    return layer


def file_layer(path: Path, data: Mapping[str, Any]) -> Layer:
    layer = Layer(kind="file", path=path)
    extras: dict[str, Any] = {}
    for key in ("hooks", "authenticator"):
        # Python objects (only a taskcast.config.py can produce them) bypass validation.
        if key in data:
            extras[key] = data[key]
    static = {k: v for k, v in data.items() if k not in extras}
    layer.data = normalize(TaskcastSettings, static, layer.origins)
    if extras:
        layer.data["extras"] = extras
    return layer


# -- errors ------------------------------------------------------------------------------


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path",
}


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as a short phrase: ``expected an integer, got "abc"``."""
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "taskcast_url":
        # Says what is wrong with the URL without quoting it (it may hold a password).
        return str(error.get("msg", "invalid URL"))
    if kind == "missing":
        return "this key is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"expected {expected.replace(chr(39), '')}, got {_quote(value)}"
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {_quote(value)}"
    msg = str(error.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg = "expected a number " + msg.removeprefix("input should be ")
    if isinstance(value, Mapping):
        # A check of a whole entry (a webhook, a cleanup rule): its message says what is wrong.
        return msg
    return f"{msg}, got {_quote(value)}"


def _key_text(loc: Sequence[str | int], origins: Mapping[tuple[str | int, ...], str]) -> str:
    """The key as the user wrote it, e.g. ``limits.maxBatch``, ``cors[2]`` or a variable name."""
    text, rest = "", tuple(loc)
    for end in range(len(loc), 0, -1):
        written = origins.get(tuple(loc[:end]))
        if written is not None:
            text, rest = written, tuple(loc[end:])
            break
    for part in rest:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _owner(loc: Sequence[str | int], layers: Sequence[Layer]) -> Layer | None:
    for layer in layers:
        for end in range(len(loc), 0, -1):
            if tuple(loc[:end]) in layer.origins:
                return layer
    return None


def _settings_error(exc: ValidationError, layers: Sequence[Layer]) -> SettingsError:
    error = exc.errors()[0]
    # Drop the union-branch tags pydantic puts in locations ("literal['*']", "list[str]").
    loc: tuple[str | int, ...] = tuple(
        p for p in error["loc"] if isinstance(p, int) or p.isidentifier()
    )
    problem = describe_error(error)
    layer = _owner(loc, layers)
    if layer is None:
        return SettingsError(f"invalid setting {'.'.join(map(str, loc))}: {problem}")
    if layer.kind == "file":
        assert layer.path is not None
        return ConfigFileError(layer.path, _key_text(loc, layer.origins), problem)
    key = _key_text(loc, layer.origins)
    if layer.kind == "env":
        return SettingsError(f"invalid environment variable {key}: {problem}")
    return SettingsError(f"invalid value for {key}: {problem}")


# -- resolution --------------------------------------------------------------------------


def default_db_path(environ: Mapping[str, str]) -> Path:
    """Where the SQLite file lives when nothing says otherwise (a per-user data directory)."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        base = Path(environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = environ.get("XDG_DATA_HOME", "").strip()
        base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "taskcast" / "taskcast.db"


def resolve_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    file: tuple[Path, Mapping[str, Any]] | None = None,
) -> TaskcastSettings:
    """Merge the layers (flags > environment > file > defaults) and settle derived values.

    Args:
        flags: Dotted settings path → ``(flag name, value)``, only for flags actually given.
        environ: The environment (default: empty, so nothing is read implicitly).
        file: The configuration file's path and parsed content.

    Raises:
        SettingsError: A value is wrong; :class:`ConfigFileError` when it came from the file.
    """
    environ = environ or {}
    layers = [flags_layer(flags or {}), env_layer(environ)]
    if file is not None:
        layers.append(file_layer(*file))
    token = _ACTIVE_LAYERS.set(tuple(layers))
    try:
        settings = TaskcastSettings()
    except ValidationError as exc:
        raise _settings_error(exc, layers) from None
    finally:
        _ACTIVE_LAYERS.reset(token)
    update: dict[str, Any] = {"config_file": file[0] if file else None}
    storage = settings.storage or _implied_storage(settings, layers)
    update["storage"] = storage
    if storage == "redis" and not settings.redis_url:
        raise _layer_error(
            layers,
            ("storage",)
            if settings.storage
            else (
                "adapters",
                "short_term_store" if settings.adapters.short_term_store.provider else "broadcast",
                "provider",
            ),
            "storage redis needs a Redis URL (TASKCAST_REDIS_URL or adapters.shortTermStore.url)",
        )
    if storage == "sqlite" and settings.db_path is None:
        update["db_path"] = default_db_path(environ)
    elif settings.db_path is not None:
        update["db_path"] = settings.db_path.expanduser()
    lt = settings.adapters.long_term_store
    if lt.provider == "postgres" and not lt.url and storage != "sqlite":
        raise _layer_error(
            layers,
            ("adapters", "long_term_store", "provider"),
            "the postgres long-term store needs a URL (TASKCAST_POSTGRES_URL or "
            "adapters.longTermStore.url)",
        )
    return settings.model_copy(update=update)


def _layer_error(layers: Sequence[Layer], loc: tuple[str, ...], problem: str) -> SettingsError:
    layer = _owner(loc, layers)
    if layer is not None and layer.kind == "file":
        assert layer.path is not None
        return ConfigFileError(layer.path, _key_text(loc, layer.origins), problem)
    return SettingsError(problem)


def _implied_storage(settings: TaskcastSettings, layers: Sequence[Layer]) -> StorageMode:
    """The original's rule when no ``storage`` is given: the adapters' provider, then a
    configured Redis URL; our default is SQLite (the original's is memory)."""
    short = settings.adapters.short_term_store.provider
    broadcast = settings.adapters.broadcast.provider
    if short and broadcast and short != broadcast:
        raise _layer_error(
            layers,
            ("adapters", "short_term_store", "provider"),
            f'shortTermStore.provider "{short}" and broadcast.provider "{broadcast}" must match',
        )
    provider = short or broadcast
    if provider == "postgres":
        raise _layer_error(
            layers,
            ("adapters", "short_term_store", "provider"),
            "postgres can only be the longTermStore provider",
        )
    if provider is not None:
        return provider
    if settings.redis_url:
        return "redis"
    return "sqlite"


def load_settings(
    *,
    config_path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> TaskcastSettings:
    """Find and read the configuration file, then :func:`resolve_settings`.

    The file is ``config_path`` if given, else ``$TASKCAST_CONFIG``, else the first of
    :data:`~taskcast.cli.CONFIG_FILE_NAMES` in ``cwd``, else one in the global directory
    (``$TASKCAST_CONFIG_DIR`` or ``~/.taskcast``). A file named explicitly must exist.
    """
    from ._files import find_config_file, load_config_file

    environ = {} if environ is None else environ
    path = config_path
    if path is None and environ.get("TASKCAST_CONFIG", "").strip():
        path = Path(environ["TASKCAST_CONFIG"].strip())
    if path is None:
        path = find_config_file(cwd or Path.cwd(), environ)
    file = None
    if path is not None:
        loaded = load_config_file(path.expanduser(), environ)
        file = (loaded.path, loaded.data)
    return resolve_settings(flags=flags, environ=environ, file=file)
