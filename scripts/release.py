"""Keep every package of a release on one version and one set of URLs, and check it.

The workspace root's ``pyproject.toml`` holds the release's version and ``[project.urls]``;
every ``packages/*/pyproject.toml`` carries the same version, pins its sibling packages to it
(``taskcast-core==X``), the same URLs, ``license-files = ["LICENSE"]`` with a copy of the
root LICENSE, and a README whose links work on PyPI (absolute, to the repository).

    python scripts/release.py check                 # exit 1 and one line per problem
    python scripts/release.py check --tag v0.2.0    # ... and the tag names this version
    python scripts/release.py set-version 0.2.0     # rewrite versions and pins, then `uv lock`
    python scripts/release.py set-repository https://github.com/owner/name
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
# A sibling pin: "taskcast-core==0.1.0" (also inside extras).
_PIN = re.compile(r'"(taskcast-[a-z-]+)==([^"]+)"')
_VERSION_LINE = re.compile(r'^version = "([^"]+)"$', re.M)
# A Markdown link or image target that is neither absolute nor an in-page anchor.
_RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")
# PEP 440, the public versions we publish (no local part).
_PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def _project(path: Path) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads(path.read_text())["project"]
    return project


def problems(tag: str | None = None) -> list[str]:
    """Everything that keeps the packages from being one consistent release."""
    root = _project(ROOT / "pyproject.toml")
    version = str(root["version"])
    urls = root.get("urls")
    repository = str(urls.get("Repository", "")) if isinstance(urls, dict) else ""
    license_text = (ROOT / "LICENSE").read_text()
    out: list[str] = []
    if not _PEP440.match(version):
        out.append(f"pyproject.toml: version {version!r} is not a PEP 440 release version")
    if not repository.startswith("https://"):
        out.append("pyproject.toml: [project.urls] has no https Repository")
    if tag is not None and tag != f"v{version}":
        out.append(f"tag {tag!r} does not name version {version} (expected v{version})")
    for package in PACKAGES:
        rel = package.relative_to(ROOT)
        text = (package / "pyproject.toml").read_text()
        project = _project(package / "pyproject.toml")
        if project.get("version") != version:
            out.append(f"{rel}: version {project.get('version')!r}, the release is {version}")
        for name, pinned in _PIN.findall(text):
            if pinned != version:
                out.append(f"{rel}: pins {name}=={pinned}, the release is {version}")
        if project.get("urls") != urls:
            out.append(f"{rel}: [project.urls] differ from the root pyproject.toml's")
        if project.get("license") != "MIT" or project.get("license-files") != ["LICENSE"]:
            out.append(f'{rel}: needs license = "MIT" and license-files = ["LICENSE"]')
        license_file = package / "LICENSE"
        if not license_file.is_file() or license_file.read_text() != license_text:
            out.append(f"{rel}/LICENSE: missing or not the root LICENSE")
        classifiers = project.get("classifiers")
        if not isinstance(classifiers, list) or "Typing :: Typed" not in classifiers:
            out.append(f"{rel}: classifiers missing (or without Typing :: Typed)")
        readme = (package / "README.md").read_text()
        for target in _RELATIVE_LINK.findall(readme):
            out.append(f"{rel}/README.md: relative link {target} (broken on PyPI)")
        for link in re.findall(r"https://github\.com/[^)\s\"'>]+", readme):
            if "weightwave/taskcast/" in link or link.rstrip("/").endswith("weightwave/taskcast"):
                continue  # the original TypeScript project
            if not link.startswith(repository):
                out.append(f"{rel}/README.md: {link} is not in {repository}")
    return out


def set_version(version: str) -> None:
    if not _PEP440.match(version):
        raise SystemExit(f"release.py: {version!r} is not a PEP 440 release version")
    root = ROOT / "pyproject.toml"
    root.write_text(_VERSION_LINE.sub(f'version = "{version}"', root.read_text(), count=1))
    for package in PACKAGES:
        path = package / "pyproject.toml"
        text = _VERSION_LINE.sub(f'version = "{version}"', path.read_text(), count=1)
        path.write_text(_PIN.sub(lambda m: f'"{m[1]}=={version}"', text))
    print(f"version {version} written; now run `uv lock`")


def set_repository(url: str) -> None:
    url = url.rstrip("/")
    if not url.startswith("https://"):
        raise SystemExit(f"release.py: {url!r} is not an https URL")
    urls = _project(ROOT / "pyproject.toml").get("urls")
    old = str(urls.get("Repository", "")) if isinstance(urls, dict) else ""
    if not old:
        raise SystemExit("release.py: the root pyproject.toml has no Repository URL to replace")
    files = [ROOT / "pyproject.toml"]
    for package in PACKAGES:
        files += [package / "pyproject.toml", package / "README.md"]
    for path in files:
        path.write_text(path.read_text().replace(old, url))
    print(f"repository {old} -> {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/release.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="exit 1 if the packages disagree")
    check.add_argument("--tag", help="the release tag (vX.Y.Z) that must name the version")
    commands.add_parser("set-version", help="write a version everywhere").add_argument("version")
    commands.add_parser("set-repository", help="replace the repository URL").add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "set-version":
        set_version(args.version)
    elif args.command == "set-repository":
        set_repository(args.url)
    found = problems(getattr(args, "tag", None))
    for problem in found:
        print(f"release.py: {problem}", file=sys.stderr)
    if not found and args.command == "check":
        version = _project(ROOT / "pyproject.toml")["version"]
        print(f"{len(PACKAGES)} packages agree on version {version}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
