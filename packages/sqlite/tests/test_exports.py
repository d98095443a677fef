import taskcast.sqlite as pkg


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(pkg) if not name.startswith("_")}
    assert set(pkg.__all__) == public - {"annotations"} | {"__version__"}
    assert pkg.SCHEMA_VERSION == len(pkg.MIGRATIONS) >= 1
