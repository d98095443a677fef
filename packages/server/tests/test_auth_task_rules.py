"""Per-task ``authConfig`` rules and the ``webhook:create`` scope."""

from __future__ import annotations

from typing import Any

import pytest

from taskcast.core import InvalidInputError, Task, TaskInput
from taskcast.server._auth import (
    FULL_ACCESS,
    AuthContext,
    AuthError,
    check_task_auth_config,
    require_webhook_scope,
    validate_auth_config,
)

TEAM_RULES: dict[str, Any] = {
    "rules": [
        {
            "match": {"scope": ["event:subscribe", "event:history"]},
            "require": {"claims": {"team": "red"}},
        },
        {"match": {"scope": ["event:publish"]}, "require": {"sub": ["worker-1", "worker-2"]}},
    ]
}


def ctx(sub: str | None = None, **claims: Any) -> AuthContext:
    return AuthContext(sub=sub, claims={"sub": sub, **claims}, source="jwt")


def allowed(c: AuthContext, config: Any, scope: str) -> bool:
    try:
        check_task_auth_config(c, config, scope)
    except AuthError as exc:
        assert (exc.status_code, exc.message) == (403, "Forbidden")
        return False
    return True


def test_claim_rule_applies_to_its_scopes_only() -> None:
    assert allowed(ctx(team="red"), TEAM_RULES, "event:subscribe")
    assert not allowed(ctx(team="blue"), TEAM_RULES, "event:subscribe")
    assert not allowed(ctx(), TEAM_RULES, "event:history")  # claim absent
    assert allowed(ctx(team="blue"), TEAM_RULES, "task:manage")  # no rule for this scope


def test_sub_rule() -> None:
    assert allowed(ctx("worker-2"), TEAM_RULES, "event:publish")
    assert not allowed(ctx("worker-3"), TEAM_RULES, "event:publish")
    assert not allowed(AuthContext(source="custom"), TEAM_RULES, "event:publish")


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        ("red", ["red", "blue"], True),
        ("green", ["red", "blue"], False),
        (["x", "red"], "red", True),
        (["x"], "red", False),
        (["x", "blue"], ["red", "blue"], True),
        (["x"], ["red"], False),
        (3, 3, True),
        ({"a": 1}, {"a": 1}, True),
        (True, "true", False),
    ],
)
def test_claim_matching(actual: Any, expected: Any, ok: bool) -> None:
    config = {"rules": [{"require": {"claims": {"c": expected}}}]}
    assert allowed(ctx(c=actual), config, "event:subscribe") is ok


def test_rules_combine_with_and() -> None:
    config = {
        "rules": [
            {"match": {"scope": ["*"]}, "require": {"sub": ["u"]}},
            {"require": {"claims": {"tier": "pro"}}},
        ]
    }
    assert allowed(ctx("u", tier="pro"), config, "event:subscribe")
    assert not allowed(ctx("u", tier="free"), config, "event:subscribe")
    assert not allowed(ctx("v", tier="pro"), config, "task:manage")


def test_accepted_inputs() -> None:
    task = Task(id="t", created_at=0, updated_at=0, auth_config=TEAM_RULES)
    assert not allowed(ctx(team="blue"), task, "event:subscribe")
    wire = {"id": "t", "authConfig": TEAM_RULES}
    assert not allowed(ctx(team="blue"), wire, "event:subscribe")
    assert allowed(ctx(team="blue"), {"id": "t"}, "event:subscribe")
    assert allowed(ctx(team="blue"), Task(id="t", created_at=0, updated_at=0), "event:subscribe")
    assert allowed(ctx(team="blue"), None, "event:subscribe")
    assert allowed(ctx(), {"rules": []}, "event:subscribe")
    assert allowed(ctx(), {}, "event:subscribe")


def test_auth_disabled_skips_rules() -> None:
    assert allowed(FULL_ACCESS, TEAM_RULES, "event:subscribe")


def test_malformed_stored_config_fails_closed() -> None:
    assert not allowed(ctx(team="red"), {"rules": "nope"}, "event:subscribe")


@pytest.mark.parametrize(
    "config",
    [
        [],
        {"rules": {}},
        {"rules": [1]},
        {"rules": [{"match": []}]},
        {"rules": [{"match": {"scope": "event:publish"}}]},
        {"rules": [{"require": []}]},
        {"rules": [{"require": {"sub": "u"}}]},
        {"rules": [{"require": {"claims": ["team"]}}]},
    ],
)
def test_validate_auth_config_rejects(config: Any) -> None:
    with pytest.raises(InvalidInputError, match="authConfig"):
        validate_auth_config(config)


def test_validate_auth_config_accepts() -> None:
    assert validate_auth_config(TEAM_RULES) is TEAM_RULES
    assert validate_auth_config({}) == {}


def test_webhook_scope() -> None:
    creator = AuthContext(scopes=frozenset({"task:create"}), source="jwt")
    require_webhook_scope(creator, {"type": "x"})
    require_webhook_scope(creator, {"webhooks": []})
    require_webhook_scope(creator, TaskInput())
    with pytest.raises(AuthError) as info:
        require_webhook_scope(creator, {"webhooks": [{"url": "https://h"}]})
    assert info.value.status_code == 403
    with pytest.raises(AuthError):
        require_webhook_scope(creator, TaskInput(webhooks=[{"url": "https://h"}]))
    full = AuthContext(scopes=frozenset({"task:create", "webhook:create"}), source="jwt")
    require_webhook_scope(full, {"webhooks": [{"url": "https://h"}]})
    require_webhook_scope(FULL_ACCESS, {"webhooks": [{"url": "https://h"}]})
