"""The one rule by which webhook URLs and secrets are shown to readers."""

from __future__ import annotations

import pytest

from taskcast.core import Task, public_webhook, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
        ("https://u:p@h.example:8443/p/x", "https://***@h.example:8443/p/x"),
        ("https://token@h.example/", "https://***@h.example/"),
        ("http://h/p?key=abc&x=1&bare", "http://h/p?key=***&x=***&***"),
        ("http://h/p?a=&b=%20", "http://h/p?a=***&b=***"),
        ("http://h/p#frag-secret", "http://h/p"),
        ("http://a:b@[::1]:80/a?t=1#f", "http://***@[::1]:80/a?t=***"),
        ("http://[::1", "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_public_webhook_shows_whether_a_secret_is_set_never_the_secret() -> None:
    raw = {
        "url": "https://u:pw@h/x?k=v",
        "secret": "s3cret",
        "filter": {"types": ["a.*"]},
        "wrap": True,
        "retry": {"retries": 1},
        "headers": {"X-Api-Key": "unknown keys are not shown"},
    }
    assert public_webhook(raw) == {
        "url": "https://***@h/x?k=***",
        "hasSecret": True,
        "filter": {"types": ["a.*"]},
        "wrap": True,
        "retry": {"retries": 1},
    }
    assert public_webhook({"url": "http://h/"}) == {"url": "http://h/", "hasSecret": False}
    assert public_webhook("not an object") == {"hasSecret": False}


def test_task_public_dict_keeps_the_storage_form_intact() -> None:
    task = Task(
        id="t", created_at=1, updated_at=1, webhooks=[{"url": "http://h/?k=v", "secret": "s"}]
    )
    assert task.public_dict()["webhooks"] == [{"url": "http://h/?k=***", "hasSecret": True}]
    assert task.to_dict()["webhooks"] == [{"url": "http://h/?k=v", "secret": "s"}]
    assert "webhooks" not in Task(id="u", created_at=1, updated_at=1).public_dict()
