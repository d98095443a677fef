"""Failed attempts per client, so a credential check cannot be guessed at full speed.

Used by ``POST /admin/token``: a client (one IP address, or one IPv6 /64, since a single host
usually holds a whole /64) that fails ``max_failures`` times within ``window_seconds`` of its
first failure is refused until that window ends. Successes are never counted and clear the
client's record. The table is bounded: past ``max_clients`` clients, the one whose last
failure is oldest is forgotten first. Each server process keeps its own table.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureThrottle", "client_key"]


def client_key(host: str | None) -> str:
    """The key a client's failures are counted under: its address, an IPv6 address's /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a Unix socket path or a name given by a proxy: as is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Record:
    window_start: float
    failures: int


class FailureThrottle:
    """Counts failures per client key in a fixed window starting at the first failure."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window = window_seconds
        self._max_clients = max_clients
        self._clock = clock
        # Ordered by last failure, oldest first: the eviction order.
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may try now."""
        record = self._records.get(key)
        if record is None:
            return None
        left = record.window_start + self._window - self._clock()
        if left <= 0:
            del self._records[key]
            return None
        return left if record.failures >= self._max_failures else None

    def failed(self, key: str) -> bool:
        """Count a failure of ``key``; True when this failure used up its allowance."""
        now = self._clock()
        record = self._records.get(key)
        if record is None or now - record.window_start >= self._window:
            record = self._records[key] = _Record(window_start=now, failures=0)
        record.failures += 1
        self._records.move_to_end(key)
        while len(self._records) > self._max_clients:
            self._records.popitem(last=False)
        return record.failures == self._max_failures

    def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures (the client proved it holds the credential)."""
        self._records.pop(key, None)
