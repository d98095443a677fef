"""``--cors-origin``: origins are checked and normalised as browsers send them.

``http://app.example/`` (a trailing slash) used to be accepted and then never matched the
browser's ``Origin: http://app.example``; garbage was accepted silently.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from taskcast.cli import app

from ._threaded import threaded_server

runner = CliRunner()


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{url}/tasks",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )


def test_an_origin_with_a_trailing_slash_or_capitals_matches_the_browser() -> None:
    flags = {"cors": ("--cors-origin", ["http://app.example/", "HTTPS://Other.Example:443"])}
    with threaded_server(flags) as url:
        for origin in ("http://app.example", "https://other.example"):
            answer = _preflight(url, origin)
            assert answer.status_code == 200, answer.text
            assert answer.headers["access-control-allow-origin"] == origin
        refused = _preflight(url, "http://elsewhere.example")
        assert "access-control-allow-origin" not in refused.headers


def test_normalised_origins_are_what_print_config_shows(clean_env: Path) -> None:
    result = runner.invoke(
        app,
        ["start", "--print-config", "--cors-origin", "http://localhost:5173/",
         "--cors-origin", "http://[::1]:80", "--cors-origin", "*"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"http://localhost:5173",\n    "http://[::1]",\n    "*"' in result.stdout


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("garbage", '(scheme://host[:port]), got "garbage"'),
        ("app.example", '(scheme://host[:port]), got "app.example"'),
        ("http://x/path", 'an origin has no path, query or fragment, got "http://x/path"'),
        ("http://x?q=1", "an origin has no path, query or fragment"),
        ("http://x:99999", "(scheme://host[:port])"),
        ("http://user:pw@x", "an origin has no user name or password"),
    ],
)
def test_a_bad_origin_is_one_line(origin: str, problem: str, clean_env: Path) -> None:
    result = runner.invoke(app, ["start", "--cors-origin", origin])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "taskcast: invalid value for --cors-origin[0]: expected an origin such as "
        "https://app.example or http://localhost:5173"
    )
    assert problem in result.stderr and result.stderr.count("\n") == 1
    assert "pw" not in result.stderr


def test_a_bad_origin_in_the_environment_names_the_variable(clean_env: Path) -> None:
    result = runner.invoke(
        app, ["start"], env={"TASKCAST_CORS_ORIGINS": "http://ok.example/,nonsense"}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "taskcast: invalid environment variable TASKCAST_CORS_ORIGINS[1]: expected an origin"
    )
