import pytest

from taskcast.core import STATUSES, TERMINAL_STATUSES, TRANSITIONS, can_transition, is_terminal

EDGES = {
    ("pending", "assigned"), ("pending", "running"), ("pending", "paused"),
    ("pending", "timeout"), ("pending", "cancelled"),
    ("assigned", "running"), ("assigned", "pending"), ("assigned", "paused"),
    ("assigned", "timeout"), ("assigned", "cancelled"),
    ("running", "paused"), ("running", "blocked"), ("running", "completed"),
    ("running", "failed"), ("running", "timeout"), ("running", "cancelled"),
    ("paused", "running"), ("paused", "assigned"), ("paused", "blocked"),
    ("paused", "timeout"), ("paused", "cancelled"),
    ("blocked", "running"), ("blocked", "assigned"), ("blocked", "paused"),
    ("blocked", "cancelled"), ("blocked", "failed"), ("blocked", "timeout"),
}  # fmt: skip


@pytest.mark.parametrize("src", STATUSES)
@pytest.mark.parametrize("dst", STATUSES)
def test_exactly_the_reference_edges(src: str, dst: str) -> None:
    assert can_transition(src, dst) is ((src, dst) in EDGES)


def test_terminal_statuses_have_no_exits() -> None:
    assert len(STATUSES) == 9
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()
        assert is_terminal(status)
    assert not is_terminal("running")
    assert not can_transition("unknown", "running")
