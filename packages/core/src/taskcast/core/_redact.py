"""What a reader may see of a webhook: secrets are write-only (architecture §7).

A webhook's ``secret`` and the credentials a URL can carry (``user:password@``, tokens in
the query string) are stored and used for delivery, but no route, SDK call, CLI output or
log line shows them. One rule redacts a URL everywhere (task reads, delivery listings,
logs), so a user learns it once:

* the user-info part (``user:password@``) becomes ``***@``;
* each query parameter keeps its name and its value becomes ``***``
  (``?key=abc&x=1`` → ``?key=***&x=***``); a parameter without ``=`` becomes ``***``;
* the fragment is dropped;
* scheme, host, port and path are shown as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "public_webhook", "redact_url"]

MASK: Final = "***"
"""What stands in for a hidden value."""

# The keys of a webhook entry a reader may see as stored; ``url`` is shown redacted and
# ``secret`` as ``hasSecret``. Unknown keys (kept in storage as the original keeps them)
# are not shown: nothing says what they hold.
_SHOWN_KEYS: Final = ("filter", "wrap", "retry")


def redact_url(url: str) -> str:
    """``url`` with its credentials and query values masked (the module's rule)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Stored URLs were validated at creation; anything unparsable is shown as nothing.
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(_mask_param(item) for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _mask_param(item: str) -> str:
    name, sep, _value = item.partition("=")
    return f"{name}={MASK}" if sep else MASK


def public_webhook(raw: object) -> dict[str, Any]:
    """A stored webhook entry as readers see it: ``{url, hasSecret, filter?, wrap?, retry?}``."""
    if not isinstance(raw, Mapping):
        return {"hasSecret": False}
    out: dict[str, Any] = {}
    url = raw.get("url")
    if isinstance(url, str):
        out["url"] = redact_url(url)
    out["hasSecret"] = bool(raw.get("secret"))
    for key in _SHOWN_KEYS:
        if raw.get(key) is not None:
            out[key] = raw[key]
    return out
