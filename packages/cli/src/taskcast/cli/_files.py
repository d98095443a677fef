"""Finding and reading configuration files.

A file is a Python module (``taskcast.config.py``) or a YAML, TOML or JSON document whose top
level is a mapping. ``${VAR}`` in string values is replaced from the environment and
``${VAR:-default}`` falls back to ``default``; ``$${`` is a literal ``${``. A variable that is
not set (or empty) without a default is a configuration error naming the variable and the key:
the original Taskcast left ``${VAR}`` as written, so a missing ``${JWT_SECRET}`` became the
publicly known HMAC key ``"${JWT_SECRET}"``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._errors import ConfigFileError, SettingsError

__all__ = [
    "CONFIG_FILE_NAMES",
    "GLOBAL_CONFIG_FILE_NAMES",
    "LoadedFile",
    "find_config_file",
    "interpolate",
    "load_config_file",
]

CONFIG_FILE_NAMES = (
    "taskcast.config.py",
    "taskcast.config.yaml",
    "taskcast.config.yml",
    "taskcast.config.toml",
    "taskcast.config.json",
)
"""Looked up, in this order, in the working directory."""

GLOBAL_CONFIG_FILE_NAMES = (
    "taskcast.config.yaml",
    "taskcast.config.yml",
    "taskcast.config.toml",
    "taskcast.config.json",
)
"""Looked up in the global directory (``$TASKCAST_CONFIG_DIR`` or ``~/.taskcast``); static
formats only, so that a file in a home directory never runs code by surprise."""

# "$${" (an escaped, literal "${") or a "${...}" reference, closed or not.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(slots=True, frozen=True, kw_only=True)
class LoadedFile:
    """A configuration file after parsing and interpolation."""

    path: Path
    data: dict[str, Any]


def global_config_dir(environ: Mapping[str, str]) -> Path:
    custom = environ.get("TASKCAST_CONFIG_DIR")
    if custom:
        return Path(custom).expanduser()
    return Path.home() / ".taskcast"


def find_config_file(cwd: Path, environ: Mapping[str, str]) -> Path | None:
    """The first existing file of :data:`CONFIG_FILE_NAMES` in ``cwd``, else of the global dir."""
    for name in CONFIG_FILE_NAMES:
        candidate = cwd / name
        if candidate.is_file():
            return candidate
    global_dir = global_config_dir(environ)
    for name in GLOBAL_CONFIG_FILE_NAMES:
        candidate = global_dir / name
        if candidate.is_file():
            return candidate
    return None


class _Unresolved(Exception):
    """A reference that cannot be replaced, at ``key`` (dotted, as written in the file)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string inside ``value`` (dicts and
    lists are walked; keys are not); ``$${`` stands for a literal ``${``.

    Raises:
        SettingsError: A variable is unset or empty and has no default, or a ``${`` is not
            a well-formed reference; the message names the key and the variable.
    """
    try:
        return _interpolate(value, environ, "")
    except _Unresolved as exc:
        raise SettingsError(f"{exc.key}: {exc.problem}" if exc.key else exc.problem) from None


def _interpolate(value: Any, environ: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):
        return _REFERENCE.sub(lambda m: _replacement(m, environ, key), value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, f"{key}.{k}" if key else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _replacement(match: re.Match[str], environ: Mapping[str, str], key: str) -> str:
    if match.group(0) == "$${":
        return "${"
    body, closed = match.group(1), match.group(2)
    # The text around a bad "${" is not quoted: it may be part of a literal secret.
    if not closed:
        raise _Unresolved(key, "unclosed ${ (write $${ for a literal ${)")
    name, has_default, default = body.partition(":-")
    if not _NAME.fullmatch(name) or "${" in default:
        # A typo such as ${JWT SECRET} must not become a literal value either.
        raise _Unresolved(
            key,
            "invalid ${...} reference: expected ${NAME} or ${NAME:-default} "
            "(write $${ for a literal ${)",
        )
    # Empty counts as unset, as for the TASKCAST_* variables themselves.
    found = environ.get(name, "")
    if found:
        return found
    if has_default:
        return default
    state = "empty" if name in environ else "not set"
    raise _Unresolved(
        key,
        f"environment variable {name} is {state} (set it, or write ${{{name}:-default}})",
    )


def load_config_file(path: Path, environ: Mapping[str, str]) -> LoadedFile:
    """Parse ``path`` by its extension (``.py``, ``.json``, ``.toml``, anything else YAML).

    Raises:
        ConfigFileError: The file cannot be read, does not parse, or is not a mapping.
    """
    suffix = path.suffix.lower()
    if suffix == ".py":
        data = _load_python(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigFileError(path, None, "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(path, None, f"cannot read the file ({_reason(exc)})") from None
        if suffix == ".json":
            data = _parse_json(path, text)
        elif suffix == ".toml":
            data = _parse_toml(path, text)
        else:
            data = _parse_yaml(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(path, None, f"expected a mapping at the top level, got {_kind(data)}")
    for key in data:
        if not isinstance(key, str):
            raise ConfigFileError(path, None, f"keys must be strings, got {key!r}")
    try:
        data = _interpolate(data, environ, "")
    except _Unresolved as exc:
        raise ConfigFileError(path, exc.key or None, exc.problem) from None
    return LoadedFile(path=path, data=data)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            path, None, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _parse_toml(path: Path, text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, None, f"invalid TOML: {exc}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigFileError(path, None, f"invalid YAML{where}: {problem}") from None


def _load_python(path: Path) -> Any:
    """Run the module and take ``config`` (dict or function) or ``CONFIG``.

    A Python file may hold what no static format can: objects and functions, such as a custom
    authenticator.
    """
    if not path.is_file():
        raise ConfigFileError(path, None, "file not found")
    # A private module name per file keeps two loads from sharing state, and nothing is
    # left in sys.modules afterwards that another import could pick up.
    name = f"_taskcast_config_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a loader
        raise ConfigFileError(path, None, "cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        if hasattr(module, "config"):
            value = module.config
            if callable(value):
                value = value()
        elif hasattr(module, "CONFIG"):
            value = module.CONFIG
        else:
            raise ConfigFileError(
                path, None, "defines neither `config` (a dict or a function) nor `CONFIG`"
            )
    except ConfigFileError:
        raise
    except SyntaxError as exc:
        raise ConfigFileError(
            path, None, f"invalid Python at line {exc.lineno}: {exc.msg}"
        ) from None
    except Exception as exc:
        raise ConfigFileError(path, None, f"raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(name, None)
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    return value
