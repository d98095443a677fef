"""The documentation's examples run, and the public surface is what ``__all__`` says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import taskcast.cli
from taskcast.cli import ENV_VARS, TaskcastSettings, load_settings, resolve_settings
from taskcast.core import TaskcastHooks

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "guide" / "configuration.md"
README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_public_names_match_all() -> None:
    public = {name for name in dir(taskcast.cli) if not name.startswith("_")}
    assert set(taskcast.cli.__all__) == public | {"__version__"}


def test_documented_yaml_with_every_key_gives_the_defaults(tmp_path: Path) -> None:
    block = next(b for b in _blocks(GUIDE.read_text(), "yaml") if "every key" in b)
    path = tmp_path / "all.yaml"
    path.write_text(block)
    documented = load_settings(config_path=path, environ={"TASKCAST_JWT_SECRET": "s"})
    defaults = resolve_settings(file=(path, {}))
    for name in TaskcastSettings.model_fields:
        if name in ("config_file", "db_path", "auth"):
            continue
        assert getattr(documented, name) == getattr(defaults, name), name
    assert documented.auth.jwt.secret == "s"
    assert documented.db_path == Path.home() / ".local/share/taskcast/taskcast.db"


def test_documented_toml_json_and_python_examples_load(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = GUIDE.read_text()
    (clean_env / "a.toml").write_text(_blocks(text, "toml")[0])
    toml = load_settings(config_path=clean_env / "a.toml", environ={"TASKCAST_JWT_SECRET": "x"})
    assert (toml.port, toml.auth.mode, toml.limits.max_batch) == (4000, "jwt", 500)
    (clean_env / "a.json").write_text(_blocks(text, "json")[0])
    json_settings = load_settings(
        config_path=clean_env / "a.json", environ={"REDIS_URL": "redis://r"}
    )
    assert json_settings.storage == "redis"
    python = next(b for b in _blocks(text, "python") if "taskcast.config.py" in b)
    (clean_env / "taskcast.config.py").write_text(python)
    settings = load_settings(environ={})
    assert settings.db_path == Path("/var/lib/taskcast/taskcast.db")
    assert isinstance(settings.extras["hooks"][0], TaskcastHooks)


def test_every_environment_variable_is_documented() -> None:
    text = GUIDE.read_text()
    for var in ENV_VARS:
        assert f"| `{var}` |" in text, var


def test_every_start_flag_is_documented() -> None:
    from typer.main import get_command

    text = GUIDE.read_text()
    start = get_command(taskcast.cli.app).commands["start"]  # type: ignore[attr-defined]
    for param in start.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt in text, opt


async def test_documented_custom_auth_example(clean_env: Path) -> None:
    import httpx

    from taskcast.cli import build

    python = next(b for b in _blocks(GUIDE.read_text(), "python") if "authenticator" in b)
    (clean_env / "taskcast.config.py").write_text(python)
    settings = load_settings(flags={"storage": ("-s", "memory")}, environ={})
    built = build(settings)
    transport = httpx.ASGITransport(app=built.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/tasks", json={})).status_code == 401
        ok = await client.post("/tasks", json={}, headers={"x-api-key": "let-me-in"})
        assert ok.status_code == 201
