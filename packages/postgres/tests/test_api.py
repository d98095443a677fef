"""The package's public surface."""

import taskcast.postgres as pkg


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(pkg) if not name.startswith("_")}
    assert set(pkg.__all__) == public | {"__version__"}
    assert sorted(pkg.__all__) == pkg.__all__
