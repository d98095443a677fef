"""Verifying the signature of a webhook a Taskcast server sent (for receivers)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["verify_webhook"]


def _key(secret: str) -> bytes:
    # Must match the server: ``whsec_``-prefixed secrets carry base64 key bytes.
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def verify_webhook(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """True if ``payload`` (the raw request body) was signed with ``secret``.

    With Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``) the signature covers id, timestamp and body, and the timestamp
    must be within ``tolerance`` seconds of ``now`` (replay protection). Without them, the
    original Taskcast's ``X-Taskcast-Signature: sha256=<hex>`` is checked (it signs the body
    only: no replay protection). Header names are matched case-insensitively.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    timestamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if msg_id is not None and timestamp is not None and signatures is not None:
        try:
            sent = int(timestamp)
        except ValueError:
            return False
        current = time.time() if now is None else now
        if abs(current - sent) > tolerance:
            return False
        signed = f"{msg_id}.{timestamp}.".encode() + payload
        expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest())
        for entry in signatures.split():
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(value.encode(), expected):
                return True
        return False
    legacy = lower.get("x-taskcast-signature")
    if legacy is None or not legacy.startswith("sha256="):
        return False
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(legacy[7:].encode(), digest.encode())
