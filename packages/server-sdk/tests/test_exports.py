"""The public surface is exactly ``__all__``, and the package stands alone."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import taskcast.server_sdk as sdk


def imported_modules(package_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in package_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def test_all_lists_every_public_name() -> None:
    public = {name for name in vars(sdk) if not name.startswith("_")}
    assert set(sdk.__all__) == public - {"annotations"} | {"__version__"}


def test_errors_share_one_root() -> None:
    errors = [
        obj for obj in vars(sdk).values() if isinstance(obj, type) and issubclass(obj, Exception)
    ]
    assert len(errors) == 10
    assert all(issubclass(err, sdk.TaskcastHTTPError) for err in errors)


def test_models_are_frozen_kw_only() -> None:
    for obj in vars(sdk).values():
        if dataclasses.is_dataclass(obj) and isinstance(obj, type):
            params = obj.__dataclass_params__  # type: ignore[attr-defined]
            assert params.frozen, obj
            assert all(f.kw_only for f in dataclasses.fields(obj)), obj


def test_imports_nothing_from_other_taskcast_packages() -> None:
    # The SDK speaks HTTP only; it must install and import without taskcast-core.
    imported = imported_modules(Path(sdk.__file__).parent)
    assert not [name for name in imported if name.startswith("taskcast.")]
    assert {"httpx", "anyio"} <= {name.split(".")[0] for name in imported}
