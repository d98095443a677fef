from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport


class CapturingTransport(Transport):
    """Keeps every envelope the SDK would send."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [dict(e) for env in self.envelopes if (e := env.get_event()) is not None]


class ExplodingTransport(Transport):
    """A transport whose every send raises, as a broken network stack might."""

    def capture_envelope(self, envelope: Envelope) -> None:
        raise RuntimeError("transport exploded")


def _init(transport: Transport) -> None:
    # No default or auto-enabling integrations: they patch stdlib/FastAPI globally and would
    # leak into other packages' tests run in the same process.
    sentry_sdk.init(
        dsn="http://key@localhost/1",
        transport=transport,
        default_integrations=False,
        auto_enabling_integrations=False,
    )


def _reset() -> None:
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_isolation_scope().clear()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sentry_transport() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    _init(transport)
    yield transport
    _reset()


@pytest.fixture
def exploding_sentry() -> Iterator[None]:
    _init(ExplodingTransport())
    yield
    _reset()
