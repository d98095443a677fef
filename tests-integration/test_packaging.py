"""What a release publishes: one version everywhere, and distributions PyPI shows correctly."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path
from types import ModuleType

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in (ROOT / "packages").glob("*/pyproject.toml"))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]

pytestmark = pytest.mark.anyio


def _release_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release", ROOT / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_release_check_passes_and_catches_a_stray_pin(tmp_path: Path) -> None:
    release = _release_script()
    assert release.problems() == []
    assert release.problems(f"v{VERSION}") == []
    assert release.problems("v999.0.0") != []
    # A copy of the tree where one package pins an old sibling and one README links locally.
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "packages", copy / "packages", ignore=shutil.ignore_patterns("src"))
    for name in ("pyproject.toml", "LICENSE"):
        shutil.copy(ROOT / name, copy / name)
    server = copy / "packages" / "server" / "pyproject.toml"
    server.write_text(
        server.read_text().replace(f"taskcast-core=={VERSION}", "taskcast-core==0.0.1")
    )
    readme = copy / "packages" / "core" / "README.md"
    readme.write_text(readme.read_text() + "\nSee [the guide](../../docs/guide/concepts.md).\n")
    release.ROOT = copy
    release.PACKAGES = sorted(p.parent for p in (copy / "packages").glob("*/pyproject.toml"))
    assert release.problems() == [
        "packages/core/README.md: relative link ../../docs/guide/concepts.md (broken on PyPI)",
        f"packages/server: pins taskcast-core==0.0.1, the release is {VERSION}",
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_its_version(package: str) -> None:
    module = importlib.import_module("taskcast." + package.replace("-", "_"))
    assert module.__version__ == VERSION
    assert "__version__" in module.__all__


async def test_the_server_reports_the_version() -> None:
    from taskcast.core import MemoryShortTermStore, TaskEngine
    from taskcast.server import create_app

    app = create_app(TaskEngine(short_term=MemoryShortTermStore()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        detail = (await client.get("/health/detail")).json()
    assert detail["version"] == VERSION


def test_the_command_reports_the_version() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "taskcast.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stdout) == (0, f"taskcast {VERSION}\n")


@pytest.mark.slow
def test_built_distributions_carry_license_classifiers_urls_and_readme(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv builds the distributions"
    subprocess.run(
        [uv, "build", "--all-packages", "--quiet", "-o", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    wheels = sorted(tmp_path.glob("*.whl"))
    sdists = sorted(tmp_path.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == len(PACKAGES)
    license_text = (ROOT / "LICENSE").read_text()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            dist_info = next(n.split("/")[0] for n in zf.namelist() if ".dist-info/" in n)
            meta = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
            assert zf.read(f"{dist_info}/licenses/LICENSE").decode() == license_text
        name = meta["Name"]
        assert meta["Version"] == VERSION, name
        assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE", name
        assert "Typing :: Typed" in meta.get_all("Classifier"), name
        assert "Programming Language :: Python :: 3 :: Only" in meta.get_all("Classifier"), name
        assert meta.get_all("Project-URL") == [f"{k}, {v}" for k, v in URLS.items()], name
        for requirement in meta.get_all("Requires-Dist") or []:
            if requirement.startswith("taskcast-"):
                assert re.match(rf"taskcast-[a-z-]+==\s*{re.escape(VERSION)}\b", requirement), (
                    name,
                    requirement,
                )
        # PyPI shows the README on its own: every link in it is absolute.
        readme = meta.get_payload()
        assert meta["Description-Content-Type"] == "text/markdown"
        assert readme.startswith(f"# {name}"), name
        assert not re.findall(r"\]\((?!https?://|#)[^)]+\)", readme), name
    for sdist in sdists:
        with tarfile.open(sdist) as tf:
            top = tf.getnames()[0].split("/")[0]
            member = tf.extractfile(f"{top}/LICENSE")
            assert member is not None and member.read().decode() == license_text
