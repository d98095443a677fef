"""JWKS: keys fetched from a real local HTTP server, off the event loop, cached and rotated."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from taskcast.server._auth import AuthError
from taskcast.server._jwt import JWTAuthenticator, JWTConfig

pytestmark = pytest.mark.anyio


class JWKSServer:
    """Serves ``self.keys`` as a JWK Set at ``/jwks`` and counts requests."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.threads: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def jwks() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def jwk(private: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    if isinstance(private, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


def sign(private: Any, kid: str | None, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "idp-user", "scope": ["event:subscribe"], "iat": now, "exp": now + 60}
    body.update(claims)
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, private, algorithm=alg, headers=headers)


async def test_jwks_verifies_and_caches(
    jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    jwks.keys = [jwk(rsa_keys[0], "k1")]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url))
    for _ in range(3):
        assert (await auth.verify(sign(rsa_keys[0], "k1")))["sub"] == "idp-user"
    assert jwks.hits == 1


async def test_fetch_runs_off_the_event_loop(
    jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    jwks.keys = [jwk(rsa_keys[0], "k1")]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url))
    cache = auth._jwks
    assert cache is not None
    fetch = cache._client.get_jwk_set
    callers: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        callers.append(threading.get_ident())
        return fetch(*args, **kwargs)

    cache._client.get_jwk_set = spy  # type: ignore[method-assign]
    await auth.verify(sign(rsa_keys[0], "k1"))
    assert callers and threading.get_ident() not in callers


async def test_unknown_kid_refetch_respects_cooldown(
    jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    jwks.keys = [jwk(rsa_keys[0], "k1")]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url, jwks_cooldown_seconds=3600))
    await auth.verify(sign(rsa_keys[0], "k1"))
    # Forged kids cannot make every request hit the identity provider.
    for i in range(5):
        with pytest.raises(AuthError):
            await auth.verify(sign(rsa_keys[1], f"forged-{i}"))
    assert jwks.hits == 1


async def test_rotated_key_is_fetched(jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    jwks.keys = [jwk(rsa_keys[0], "k1")]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url, jwks_cooldown_seconds=0))
    await auth.verify(sign(rsa_keys[0], "k1"))
    jwks.keys = [jwk(rsa_keys[0], "k1"), jwk(rsa_keys[1], "k2")]
    assert (await auth.verify(sign(rsa_keys[1], "k2")))["sub"] == "idp-user"
    assert jwks.hits == 2


async def test_kid_less_token_needs_a_single_key(
    jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    jwks.keys = [jwk(rsa_keys[0], None)]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url, jwks_cooldown_seconds=0))
    assert (await auth.verify(sign(rsa_keys[0], None)))["sub"] == "idp-user"
    jwks.keys = [jwk(rsa_keys[0], "k1"), jwk(rsa_keys[1], "k2")]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url))
    with pytest.raises(AuthError):
        await auth.verify(sign(rsa_keys[0], None))


async def test_encryption_keys_and_wrong_algorithms_are_ignored(
    jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.keys = [jwk(rsa_keys[0], "enc", use="enc"), jwk(ec_key, "ec1")]
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url))  # RS256 only
    with pytest.raises(AuthError):
        await auth.verify(sign(rsa_keys[0], "enc"))
    # The key set has an EC key, but ES256 is not an accepted algorithm.
    with pytest.raises(AuthError):
        await auth.verify(sign(ec_key, "ec1", alg="ES256"))
    both = JWTAuthenticator(JWTConfig(jwks_url=jwks.url, algorithms=("RS256", "ES256")))
    assert (await both.verify(sign(ec_key, "ec1", alg="ES256")))["sub"] == "idp-user"


async def test_outage_keeps_the_last_good_keys(
    jwks: JWKSServer, rsa_keys: list[rsa.RSAPrivateKey], caplog: pytest.LogCaptureFixture
) -> None:
    jwks.keys = [jwk(rsa_keys[0], "k1")]
    auth = JWTAuthenticator(
        JWTConfig(jwks_url=jwks.url, jwks_cache_seconds=0, jwks_cooldown_seconds=0)
    )
    await auth.verify(sign(rsa_keys[0], "k1"))
    jwks.stop()
    caplog.set_level(logging.WARNING, logger="taskcast.server._jwt")
    assert (await auth.verify(sign(rsa_keys[0], "k1")))["sub"] == "idp-user"
    assert any("JWKS fetch failed" in r.getMessage() for r in caplog.records)


async def test_unreachable_jwks_refuses() -> None:
    auth = JWTAuthenticator(JWTConfig(jwks_url="http://127.0.0.1:9/jwks", jwks_timeout_seconds=1))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError) as info:
        await auth.verify(sign(key, "k1"))
    assert info.value.message == "Invalid or expired token"


async def test_garbage_token_with_jwks(jwks: JWKSServer) -> None:
    auth = JWTAuthenticator(JWTConfig(jwks_url=jwks.url))
    with pytest.raises(AuthError):
        await auth.verify("not.a.token")
    assert jwks.hits == 0
