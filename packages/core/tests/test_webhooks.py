from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskcast.core import (
    EventFilter,
    InvalidInputError,
    MemoryWebhookOutbox,
    TaskEvent,
    WebhookConfig,
    WebhookDelivery,
    WebhookRetry,
    parse_webhooks,
)
from taskcast.core.testing import WebhookOutboxContract


class TestMemoryWebhookOutbox(WebhookOutboxContract):
    @pytest.fixture
    async def outbox(self) -> AsyncIterator[MemoryWebhookOutbox]:
        box = MemoryWebhookOutbox()
        await box.open()
        yield box
        await box.close()


def event(type_: str = "llm.delta", level: str = "info") -> TaskEvent:
    return TaskEvent(id="e", task_id="t", index=0, timestamp=1, type=type_, level=level)  # type: ignore[arg-type]


def test_full_config_parses() -> None:
    (hook,) = parse_webhooks(
        [
            {
                "url": "https://hooks.example.com/x?y=1",
                "filter": {"types": ["llm.*"], "levels": ["info"], "includeStatus": False},
                "secret": "s",
                "wrap": True,
                "retry": {"retries": 1, "backoff": "fixed", "timeoutMs": 100},
                "unknown": "ignored",
            }
        ]
    )
    assert hook.filter == EventFilter(types=("llm.*",), levels=("info",), include_status=False)
    assert (hook.secret, hook.wrap) == ("s", True)
    policy = hook.policy(WebhookRetry(initial_delay_ms=50))
    assert (policy.retries, policy.backoff, policy.timeout_ms, policy.initial_delay_ms) == (
        1,
        "fixed",
        100,
        50,
    )
    assert hook.matches(event("llm.delta"))
    assert not hook.matches(event("taskcast:status"))
    assert not hook.matches(event("other"))
    assert parse_webhooks(None) == []
    plain = WebhookConfig.from_dict({"url": "http://h", "wrap": None})
    assert plain.matches(event()) and not plain.wrap
    assert plain.policy(WebhookRetry()) == WebhookRetry()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "must be an array"),
        ([1], "must be an object"),
        ([{"url": "ftp://h/x"}], "http or https"),
        ([{"url": "http:///nohost"}], "http or https"),
        ([{"url": "http://h:0/"}], "Invalid webhook url"),
        ([{"url": "http://h:99999/"}], "Invalid webhook url"),
        ([{"url": "http://h/a b"}], "control characters"),
        ([{"url": "http://" + "a" * 3000}], "longer than"),
        ([{"url": 5}], "non-empty string"),
        ([{}], "non-empty string"),
        ([{"url": "http://h", "filter": []}], "filter"),
        ([{"url": "http://h", "filter": {"types": "x"}}], "filter.types"),
        ([{"url": "http://h", "filter": {"levels": ["loud"]}}], "filter.levels"),
        ([{"url": "http://h", "filter": {"includeStatus": "no"}}], "includeStatus"),
        ([{"url": "http://h", "secret": ""}], "secret"),
        ([{"url": "http://h", "secret": 3}], "secret"),
        ([{"url": "http://h", "wrap": "yes"}], "wrap"),
        ([{"url": "http://h", "retry": 3}], "retry: must be an object"),
        ([{"url": "http://h", "retry": {"retries": -1}}], "retry.retries"),
        ([{"url": "http://h", "retry": {"retries": True}}], "retry.retries"),
        ([{"url": "http://h", "retry": {"backoff": "random"}}], "retry.backoff"),
        ([{"url": "http://h", "retry": {"timeoutMs": 0}}], "retry.timeoutMs"),
        ([{"url": "http://h", "retry": {"initialDelayMs": 1.5}}], "initialDelayMs"),
        ([{"url": "http://h", "retry": {"maxDelayMs": -1}}], "maxDelayMs"),
        ([{"url": "http://h", "retry": {"jitter": 2}}], "jitter"),
        ([{"url": "http://h", "retry": {"jitter": True}}], "jitter"),
        ([{"url": "http://h"}] * 21, "Too many"),
    ],
)
def test_invalid_configs_are_refused(raw: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_webhooks(raw)


@pytest.mark.parametrize(
    "url", ["ftp://u:pw@h/x?key=k1", "http://u:pw@h:0/?key=k1", "http://u:pw@h:99999/?key=k1"]
)
def test_refusals_show_the_url_redacted(url: str) -> None:
    # The message reaches a 400 answer and log lines ("task has invalid webhooks").
    with pytest.raises(InvalidInputError) as info:
        parse_webhooks([{"url": url}])
    assert "pw" not in info.value.message and "k1" not in info.value.message
    assert "***@h" in info.value.message


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("fixed", [100, 100, 100, 100]),
        ("linear", [100, 200, 300, 350]),
        ("exponential", [100, 200, 350, 350]),
    ],
)
def test_backoff_is_capped(backoff: Any, expected: list[int]) -> None:
    retry = WebhookRetry(backoff=backoff, initial_delay_ms=100, max_delay_ms=350, jitter=0.5)
    assert [retry.delay_ms(n, rand=0.0) for n in (1, 2, 3, 4)] == expected
    # Jitter only shortens, by at most the fraction.
    assert retry.delay_ms(1, rand=1.0) == 50
    assert 50 <= retry.delay_ms(1) <= 100


def test_huge_exponent_does_not_overflow() -> None:
    retry = WebhookRetry(initial_delay_ms=1000, max_delay_ms=5000, jitter=0)
    assert retry.delay_ms(10_000) == 5000


def test_delivery_dict_forms() -> None:
    d = WebhookDelivery(
        id="d1",
        task_id="t",
        event_id="e",
        event_type="x",
        url="https://user:pw@[::1]:8443/p?token=abc",
        body="{}",
        secret="s",
        created_at=1,
        next_attempt_at=2,
        last_error="HTTP 500",
        response_status=500,
    )
    assert WebhookDelivery.from_dict(d.to_dict()) == d
    public = d.public_dict()
    assert public["url"] == "https://***@[::1]:8443/p?token=***"
    assert "secret" not in public and "body" not in public and "lease" not in public
    assert public["nextAttemptAt"] == 2 and public["maxAttempts"] == 4
    finished = WebhookDelivery.from_dict({**d.to_dict(), "status": "delivered", "completedAt": 9})
    assert "nextAttemptAt" not in finished.public_dict()
    assert (
        WebhookDelivery.from_dict({**d.to_dict(), "url": "http://h/x"}).public_dict()["url"]
        == "http://h/x"
    )
