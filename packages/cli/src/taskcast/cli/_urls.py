"""Checks of the Redis and PostgreSQL URLs in the settings: malformed is a settings error.

A malformed URL used to start the server anyway (PostgreSQL: warnings for ever) or fail
late with the driver's wording. The error names what is wrong without quoting the URL,
which may hold a password.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic_core import PydanticCustomError

__all__ = ["check_postgres_url", "check_redis_url", "normalize_origin"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("taskcast_url", message)


def check_redis_url(url: str) -> None:
    """Raise (a pydantic error) unless ``url`` is a URL redis-py can connect with."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise _invalid(f"not a Redis URL ({exc})") from None
    if parts.scheme.lower() not in _REDIS_SCHEMES:
        raise _invalid(
            "expected a Redis URL starting with redis://, rediss:// or unix:// "
            "(e.g. redis://localhost:6379/0)"
        )
    if parts.scheme.lower() != "unix" and not parts.hostname:
        raise _invalid("the Redis URL names no host (e.g. redis://localhost:6379/0)")
    if port == 0:
        raise _invalid("the Redis URL's port must be 1-65535")
    database = parts.path.strip("/")
    if parts.scheme.lower() != "unix" and database and not database.isdigit():
        raise _invalid("the Redis URL's path must be a database number (e.g. /0)")


def check_postgres_url(url: str) -> None:
    """Raise (a pydantic error) unless libpq can parse ``url`` (a URL or key=value string)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - taskcast-cli installs it
        return
    stripped = url.strip()
    if "://" in stripped and not stripped.lower().startswith(("postgresql://", "postgres://")):
        raise _invalid("expected a PostgreSQL URL starting with postgresql:// or postgres://")
    try:
        psycopg.conninfo.conninfo_to_dict(stripped)
    except psycopg.ProgrammingError as exc:
        # libpq's reason may quote a fragment of the string; keep only its first line.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparsable"
        raise _invalid(
            f"not a PostgreSQL URL (e.g. postgresql://user@host:5432/db): {reason}"
        ) from None


def normalize_origin(origin: str) -> str:
    """A CORS origin as browsers send it: ``scheme://host[:port]``, lower case, no slash.

    Browsers compare the ``Origin`` header exactly, so ``http://app.example/`` (a trailing
    slash) or ``HTTP://App.example`` would never match: those are normalised. ``*`` (any
    origin) is kept; anything with a path, query, fragment or credentials, or without a
    scheme and host, is refused.
    """
    text = origin.strip()
    if text == "*":
        return text
    example = "expected an origin such as https://app.example or http://localhost:5173"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{example} (scheme://host[:port])") from None
    if not parts.scheme or not parts.hostname or "://" not in text:
        raise ValueError(f"{example} (scheme://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text:
        raise ValueError(f"{example}: an origin has no path, query or fragment")
    if parts.username is not None or parts.password is not None:
        # Not quoted back: what looks like credentials is treated as a secret.
        raise _invalid(f"{example}: an origin has no user name or password")
    host = parts.hostname
    if ":" in host:  # IPv6
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    # Browsers leave a scheme's default port out of Origin.
    shown_port = "" if port is None or port == default else f":{port}"
    return f"{parts.scheme.lower()}://{host.lower()}{shown_port}"
