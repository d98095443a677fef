"""verify_webhook against signatures computed independently here (as the server does)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from taskcast.server_sdk import verify_webhook

BODY = b'{"id":"e1","type":"llm.delta"}'


def standard(secret_key: bytes, msg_id: str, ts: int, body: bytes = BODY) -> str:
    mac = hmac.new(secret_key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_standard_webhooks_signature() -> None:
    headers = {
        "Webhook-Id": "d1",
        "Webhook-Timestamp": "1000",
        "Webhook-Signature": "v1,bogus " + standard(b"s3cret", "d1", 1000),
    }
    assert verify_webhook(BODY, headers, "s3cret", now=1000)
    assert verify_webhook(BODY, headers, "s3cret", now=1299)
    assert not verify_webhook(BODY, headers, "s3cret", now=1301)  # too old: replay
    assert not verify_webhook(BODY, headers, "s3cret", now=699)  # from the future
    assert not verify_webhook(BODY + b" ", headers, "s3cret", now=1000)
    assert not verify_webhook(BODY, headers, "other", now=1000)
    assert not verify_webhook(BODY, {**headers, "webhook-id": "d2"}, "s3cret", now=1000)
    assert not verify_webhook(BODY, {**headers, "webhook-timestamp": "x"}, "s3cret", now=1)
    assert not verify_webhook(
        BODY,
        {**headers, "Webhook-Signature": "v2," + standard(b"s3cret", "d1", 1000)[3:]},
        "s3cret",
        now=1000,
    )


def test_whsec_secret_uses_the_decoded_key() -> None:
    key = b"\x01\x02binary-key"
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = {
        "webhook-id": "d",
        "webhook-timestamp": "50",
        "webhook-signature": standard(key, "d", 50),
    }
    assert verify_webhook(BODY, headers, secret, now=50)
    # A ``whsec_`` secret that is not base64 is used as plain text, as the server does.
    odd = "whsec_not*base64"
    headers["webhook-signature"] = standard(odd.encode(), "d", 50)
    assert verify_webhook(BODY, headers, odd, now=50)


def test_original_taskcast_signature() -> None:
    digest = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
    assert verify_webhook(BODY, {"X-Taskcast-Signature": f"sha256={digest}"}, "k")
    assert not verify_webhook(BODY, {"X-Taskcast-Signature": f"sha256={digest}"}, "j")
    assert not verify_webhook(BODY, {"X-Taskcast-Signature": digest}, "k")
    assert not verify_webhook(BODY, {}, "k")


@pytest.mark.parametrize("tolerance", [0, 10])
def test_default_clock_is_used(tolerance: int) -> None:
    headers = {"webhook-id": "d", "webhook-timestamp": "5", "webhook-signature": "v1,x"}
    assert not verify_webhook(BODY, headers, "k", tolerance=tolerance)
