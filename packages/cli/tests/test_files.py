"""Configuration files: every format, lookup order, interpolation and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskcast.cli import (
    CONFIG_FILE_NAMES,
    ConfigFileError,
    SettingsError,
    find_config_file,
    interpolate,
    load_config_file,
    load_settings,
)

SAMPLE = {
    "port": 4100,
    "logLevel": "debug",
    "auth": {"mode": "jwt", "jwt": {"secret": "${JWT_SECRET}", "issuer": "me"}},
    "limits": {"maxBatch": 10},
}

TEXTS = {
    ".yaml": """
port: 4100
logLevel: debug
auth:
  mode: jwt
  jwt:
    secret: ${JWT_SECRET}
    issuer: me
limits:
  maxBatch: 10
""",
    ".toml": """
port = 4100
logLevel = "debug"
[auth]
mode = "jwt"
[auth.jwt]
secret = "${JWT_SECRET}"
issuer = "me"
[limits]
maxBatch = 10
""",
    ".json": json.dumps(SAMPLE),
    ".py": f"config = {SAMPLE!r}\n",
}
TEXTS[".yml"] = TEXTS[".yaml"]


@pytest.mark.parametrize("suffix", [".py", ".yaml", ".yml", ".toml", ".json"])
def test_every_format_loads_and_interpolates(clean_env: Path, suffix: str) -> None:
    path = clean_env / f"taskcast.config{suffix}"
    path.write_text(TEXTS[suffix])
    loaded = load_config_file(path, {"JWT_SECRET": "s3cret"})
    assert loaded.data["auth"]["jwt"]["secret"] == "s3cret"
    settings = load_settings(environ={"JWT_SECRET": "s3cret"})
    assert settings.config_file == path
    assert settings.port == 4100
    assert settings.log_level == "debug"
    assert settings.auth.mode == "jwt"
    assert settings.auth.jwt.secret == "s3cret"
    assert settings.auth.jwt.issuer == "me"
    assert settings.limits.max_batch == 10


def test_lookup_order_in_working_directory(clean_env: Path) -> None:
    for name in reversed(CONFIG_FILE_NAMES):
        (clean_env / name).write_text(TEXTS[Path(name).suffix])
        assert find_config_file(clean_env, {}) == clean_env / name
    assert CONFIG_FILE_NAMES[0] == "taskcast.config.py"


def test_global_directory_is_used_last(clean_env: Path, tmp_path: Path) -> None:
    global_dir = tmp_path / "global"
    global_dir.mkdir()
    (global_dir / "taskcast.config.toml").write_text("port = 4200\n")
    env = {"TASKCAST_CONFIG_DIR": str(global_dir)}
    assert find_config_file(clean_env, env) == global_dir / "taskcast.config.toml"
    assert load_settings(environ=env).port == 4200
    # A Python file in the global directory is never run.
    (global_dir / "taskcast.config.toml").unlink()
    (global_dir / "taskcast.config.py").write_text("raise SystemExit('ran')\n")
    assert find_config_file(clean_env, env) is None
    # The working directory wins over the global directory.
    (global_dir / "taskcast.config.json").write_text('{"port": 1}')
    (clean_env / "taskcast.config.json").write_text('{"port": 2}')
    assert load_settings(environ=env).port == 2


def test_default_global_directory_is_home_dot_taskcast(clean_env: Path) -> None:
    home = Path.home()
    (home / ".taskcast").mkdir()
    (home / ".taskcast" / "taskcast.config.yml").write_text("port: 4300\n")
    assert load_settings(environ={}).port == 4300


def test_no_file_gives_defaults(clean_env: Path) -> None:
    settings = load_settings(environ={})
    assert settings.config_file is None
    assert settings.port == 3721
    assert settings.host == "127.0.0.1"


def test_explicit_path_and_taskcast_config_variable(clean_env: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("port: 4400\n")
    (clean_env / "taskcast.config.json").write_text('{"port": 1}')
    assert load_settings(config_path=other, environ={}).port == 4400
    assert load_settings(environ={"TASKCAST_CONFIG": str(other)}).port == 4400


def test_unknown_extension_reads_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "settings.conf"
    path.write_text("port: 4500\n")
    assert load_config_file(path, {}).data == {"port": 4500}


def test_interpolation_rules() -> None:
    env = {"A": "1", "B": "two", "EMPTY": ""}
    value = {
        "x": "${A}-${B}",
        "y": ["${MISSING:-fallback}", 3, {"z": "${B}"}],
        "n": None,
        "e": "${EMPTY:-used when empty}",
        "blank": "${MISSING:-}",
        "set": "${A:-ignored}",
        "escaped": "$${A} and $${ and $$ and $x",
        "${A}": "keys are not interpolated",
    }
    assert interpolate(value, env) == {
        "x": "1-two",
        "y": ["fallback", 3, {"z": "two"}],
        "n": None,
        "e": "used when empty",
        "blank": "",
        "set": "1",
        "escaped": "${A} and ${ and $$ and $x",
        "${A}": "keys are not interpolated",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"auth": {"jwt": {"secret": "${NOPE}"}}},
         "auth.jwt.secret: environment variable NOPE is not set "
         "(set it, or write ${NOPE:-default})"),
        ({"cors": ["a", "x-${EMPTY}"]},
         "cors[1]: environment variable EMPTY is empty (set it, or write ${EMPTY:-default})"),
        ({"k": "${}"}, "k: invalid ${...} reference: expected ${NAME} or ${NAME:-default} "
         "(write $${ for a literal ${)"),
        ({"k": "${JWT SECRET}"}, "k: invalid ${...} reference: expected ${NAME} or "
         "${NAME:-default} (write $${ for a literal ${)"),
        ({"k": "${A:-${B}}"}, "k: invalid ${...} reference: expected ${NAME} or "
         "${NAME:-default} (write $${ for a literal ${)"),
        ({"k": "s3cr3t${tail"}, "k: unclosed ${ (write $${ for a literal ${)"),
    ],
)  # fmt: skip
def test_unresolvable_references_are_errors(value: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        interpolate(value, {"EMPTY": ""})
    assert str(info.value) == message
    # The text around a bad reference is never echoed: it may be a literal secret.
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json", ".py"])
def test_unset_variable_is_an_error_naming_file_key_and_variable(
    clean_env: Path, suffix: str
) -> None:
    # The original kept "${NOPE}" as written: the server then signed tokens with that
    # publicly readable text as its HMAC key.
    path = clean_env / f"taskcast.config{suffix}"
    path.write_text(TEXTS[suffix].replace("${JWT_SECRET}", "${NOPE}"))
    with pytest.raises(ConfigFileError) as info:
        load_settings(environ={"JWT_SECRET": "s3cret"})
    assert info.value.path == path
    assert info.value.key == "auth.jwt.secret"
    assert str(info.value) == (
        f"config error in ./taskcast.config{suffix}: auth.jwt.secret: "
        "environment variable NOPE is not set (set it, or write ${NOPE:-default})"
    )
    path.write_text(TEXTS[suffix].replace("${JWT_SECRET}", "${NOPE:-from-the-default}"))
    assert load_settings(environ={}).auth.jwt.secret == "from-the-default"


def test_empty_file_is_an_empty_config(clean_env: Path) -> None:
    (clean_env / "taskcast.config.yaml").write_text("# nothing yet\n")
    assert load_settings(environ={}).port == 3721


def test_python_config_function_and_constant(tmp_path: Path) -> None:
    fn = tmp_path / "a.py"
    fn.write_text("import os\ndef config():\n    return {'port': int(os.environ.get('P', '1'))}\n")
    assert load_config_file(fn, {}).data == {"port": 1}
    const = tmp_path / "b.py"
    const.write_text("from types import MappingProxyType\nCONFIG = MappingProxyType({'port': 2})\n")
    assert load_config_file(const, {}).data == {"port": 2}


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "c.yaml",
            "port: [1,\n",
            "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
        ),
        ("c.yaml", "- 1\n- 2\n", "expected a mapping at the top level, got a list"),
        ("c.yaml", "1: x\n", "keys must be strings, got 1"),
        ("c.json", '{"port": }', "invalid JSON at line 1, column 10: Expecting value"),
        ("c.json", '"text"', "expected a mapping at the top level, got a string"),
        ("c.toml", "port = \n", "invalid TOML: Invalid value (at line 1, column 8)"),
        ("c.py", "x = 1\n", "defines neither `config` (a dict or a function) nor `CONFIG`"),
        ("c.py", "config = [1]\n", "expected a mapping at the top level, got a list"),
        ("c.py", "config = 3\n", "expected a mapping at the top level, got a number"),
        ("c.py", "config = True\n", "expected a mapping at the top level, got a boolean"),
        ("c.py", "config = object()\n", "expected a mapping at the top level, got object"),
        ("c.py", "def (:\n", "invalid Python at line 1: invalid syntax"),
        ("c.py", "raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
        ("c.py", "def config():\n    return 1 / 0\n", "raised ZeroDivisionError: division by zero"),
    ],
)
def test_file_errors_name_the_file(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path, {})
    assert info.value.problem == problem
    assert info.value.path == path
    assert str(info.value) == f"config error in {path}: {problem}"
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    for name in ("none.yaml", "none.py"):
        with pytest.raises(ConfigFileError, match="file not found"):
            load_config_file(tmp_path / name, {})
    with pytest.raises(ConfigFileError, match="cannot read the file"):
        load_config_file(tmp_path, {})
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigFileError, match="cannot read the file"):
        load_config_file(binary, {})


def test_paths_in_working_directory_are_shown_relative(clean_env: Path) -> None:
    path = clean_env / "taskcast.config.json"
    path.write_text("[]")
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path, {})
    assert str(info.value).startswith("config error in ./taskcast.config.json: ")
