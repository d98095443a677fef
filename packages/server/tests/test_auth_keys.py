"""Asymmetric keys (RS256, PS256, ES256/384/512, EdDSA), key files and configuration errors."""

from __future__ import annotations

import datetime
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

from taskcast.core import ConfigError
from taskcast.server._auth import AuthError
from taskcast.server._jwt import JWTAuthenticator, JWTConfig
from taskcast.server._tokens import mint_subscribe_token, mint_token

pytestmark = pytest.mark.anyio

SECRET = "test-secret-that-is-long-enough-for-hs256!"


def pem_public(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def pem_private(private: Any) -> bytes:
    return bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "svc", "scope": ["*"], "iat": now, "exp": now + 60, **extra}


KEY_CASES = [
    ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
    ("ES512", lambda: ec.generate_private_key(ec.SECP521R1())),
    ("EdDSA", ed25519.Ed25519PrivateKey.generate),
]


@pytest.mark.parametrize(("alg", "make"), KEY_CASES, ids=[c[0] for c in KEY_CASES])
async def test_public_key_verifies_and_infers_algorithm(alg: str, make: Any) -> None:
    private = make()
    auth = JWTAuthenticator(JWTConfig(public_key=pem_public(private).decode()))
    assert auth.algorithms == (alg,)
    tok = jwt.encode(claims(), private, algorithm=alg)
    assert (await auth.verify(tok))["sub"] == "svc"
    # A different key of the same type is refused.
    other = jwt.encode(claims(), make(), algorithm=alg)
    with pytest.raises(AuthError) as info:
        await auth.verify(other)
    assert (info.value.status_code, info.value.message) == (401, "Invalid or expired token")


async def test_rsa_pss_and_explicit_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JWTAuthenticator(JWTConfig(public_key=pem_public(rsa_key), algorithm="PS256"))
    assert (await auth.verify(jwt.encode(claims(), rsa_key, algorithm="PS256")))["sub"] == "svc"
    with pytest.raises(AuthError):
        await auth.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"))


async def test_key_confusion_hmac_with_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem_public(rsa_key)
    auth = JWTAuthenticator(JWTConfig(public_key=public_pem))
    # The classic attack: sign HS256 using the public key bytes as the HMAC secret.
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(b'{"sub":"evil","scope":["*"]}')
    import hashlib
    import hmac

    sig = hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    forged = b".".join([header, payload, jwt.utils.base64url_encode(sig)]).decode()
    with pytest.raises(AuthError):
        await auth.verify(forged)


async def test_public_key_file_escaped_newlines_and_certificate(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    tok = jwt.encode(claims(), rsa_key, algorithm="RS256")
    key_file = tmp_path / "pub.pem"
    key_file.write_bytes(pem_public(rsa_key))
    assert (await JWTAuthenticator(JWTConfig(public_key_file=key_file)).verify(tok))["sub"]
    escaped = pem_public(rsa_key).decode().replace("\n", "\\n")
    assert (await JWTAuthenticator(JWTConfig(public_key=escaped)).verify(tok))["sub"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    assert (await JWTAuthenticator(JWTConfig(public_key=cert_pem)).verify(tok))["sub"]


async def test_secret_takes_precedence_over_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JWTAuthenticator(JWTConfig(secret=SECRET, public_key=pem_public(rsa_key)))
    assert auth.algorithms == ("HS256",)
    assert (await auth.verify(jwt.encode(claims(), SECRET, algorithm="HS256")))["sub"] == "svc"


async def test_mint_with_private_key(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JWTAuthenticator(JWTConfig(public_key=pem_public(rsa_key)))
    tok = mint_subscribe_token(pem_private(rsa_key).decode(), "t1", algorithm="RS256")
    assert (await auth.verify(tok))["taskIds"] == ["t1"]


async def test_weak_secret_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="needs at least 32"):
        JWTAuthenticator(JWTConfig(secret="short"))
    with pytest.raises(ConfigError, match="needs at least 64"):
        JWTAuthenticator(JWTConfig(secret=SECRET, algorithm="HS512"))
    auth = JWTAuthenticator(JWTConfig(secret=b"short", allow_weak_keys=True))
    tok = mint_token(b"short", scope=["*"], ttl_seconds=60, allow_weak_keys=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (await auth.verify(tok))["scope"] == ["*"]


def test_weak_rsa_key_refused_unless_allowed() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="at least 2048"):
        JWTAuthenticator(JWTConfig(public_key=pem_public(small)))
    JWTAuthenticator(JWTConfig(public_key=pem_public(small), allow_weak_keys=True))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (JWTConfig(), "needs a secret"),
        (JWTConfig(secret=""), "needs a secret"),
        (JWTConfig(secret=SECRET, algorithm="RS256"), "cannot be used with a secret"),
        (JWTConfig(secret=SECRET, algorithm="none"), "Unsupported JWT algorithm"),
        (JWTConfig(secret=SECRET, algorithms=("HS256", "XX1")), "Unsupported JWT algorithm"),
        (JWTConfig(public_key="not a pem"), "not a valid PEM"),
        (JWTConfig(public_key_file="/nonexistent/key.pem"), "Cannot read"),
        (JWTConfig(jwks_url="http://127.0.0.1:9/jwks", algorithm="HS256"), "JWKS"),
    ],
)
def test_configuration_errors(config: JWTConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        JWTAuthenticator(config)


def test_algorithm_must_fit_the_key(rsa_key: rsa.RSAPrivateKey) -> None:
    p256 = pem_public(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match="does not fit"):
        JWTAuthenticator(JWTConfig(public_key=p256, algorithm="ES384"))
    with pytest.raises(ConfigError, match="does not fit"):
        JWTAuthenticator(JWTConfig(public_key=pem_public(rsa_key), algorithm="HS256"))
    with pytest.raises(ConfigError, match="does not fit"):
        JWTAuthenticator(JWTConfig(public_key=p256, algorithm="EdDSA"))


def test_unsupported_keys() -> None:
    k1 = pem_public(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(ConfigError, match="Unsupported elliptic curve"):
        JWTAuthenticator(JWTConfig(public_key=k1))
    xkey = pem_public(x25519.X25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="Unsupported JWT public key type"):
        JWTAuthenticator(JWTConfig(public_key=xkey))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"leeway_seconds": -1},
        {"jwks_cache_seconds": float("nan")},
        {"jwks_cooldown_seconds": float("inf")},
        {"jwks_timeout_seconds": 0},
    ],
)
def test_config_numbers_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="must be"):
        JWTConfig(secret=SECRET, **kwargs)  # type: ignore[arg-type]
