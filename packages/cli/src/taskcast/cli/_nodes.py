"""Named server profiles (``taskcast node ...``) and which server a client command talks to.

Profiles live in ``nodes.json`` in the global directory (``$TASKCAST_CONFIG_DIR``, default
``~/.taskcast``), in the original's shape::

    {"current": "prod", "nodes": {"prod": {"url": "https://...", "token": "...",
                                           "tokenType": "jwt"}}}

The file holds tokens, so it is written with mode 0600. A node whose ``tokenType`` is
``admin`` stores the server's admin token; every command exchanges it for a JWT with
``POST /admin/token`` before talking to the server (as the original does).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from ._errors import SettingsError
from ._files import global_config_dir

__all__ = [
    "DEFAULT_NODE",
    "DEFAULT_URL",
    "Node",
    "NodeStore",
    "Target",
    "exchange_admin_token",
    "resolve_target",
]

DEFAULT_URL = "http://127.0.0.1:3721"
DEFAULT_NODE = "default"
"""The name shown for the built-in node when no profile is current."""

TokenType = Literal["jwt", "admin"]


@dataclass(slots=True, frozen=True, kw_only=True)
class Node:
    """One saved server."""

    name: str
    url: str
    token: str | None = None
    token_type: TokenType = "jwt"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url}
        if self.token:
            out["token"] = self.token
            out["tokenType"] = self.token_type
        return out


def _check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"invalid URL {url!r}: expected http://... or https://...")
    return url


class NodeStore:
    """``nodes.json``: read on demand, rewritten whole (atomically) on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls, environ: Mapping[str, str]) -> NodeStore:
        return cls(global_config_dir(environ) / "nodes.json")

    def _read(self) -> tuple[str | None, dict[str, Node]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, {}
        except (OSError, ValueError) as exc:
            raise SettingsError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("nodes", {}), dict):
            raise SettingsError(f"cannot read {self.path}: expected {{current, nodes}}")
        nodes: dict[str, Node] = {}
        for name, entry in raw.get("nodes", {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise SettingsError(f"cannot read {self.path}: node {name!r} has no url")
            token_type: TokenType
            raw_type = entry.get("tokenType") or "jwt"
            if raw_type == "jwt":
                token_type = "jwt"
            elif raw_type == "admin":
                token_type = "admin"
            else:
                raise SettingsError(
                    f"cannot read {self.path}: node {name!r} has tokenType {raw_type!r}"
                )
            nodes[name] = Node(
                name=name, url=entry["url"], token=entry.get("token"), token_type=token_type
            )
        current = raw.get("current")
        return (current if isinstance(current, str) else None), nodes

    def _write(self, current: str | None, nodes: Mapping[str, Node]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"current": current, "nodes": {n: node.to_json() for n, node in nodes.items()}}
        # Write a private temporary file and rename it, so that a crash never leaves a
        # half-written file and the tokens are never readable by others, not even briefly.
        fd, tmp = tempfile.mkstemp(prefix=".nodes-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def nodes(self) -> dict[str, Node]:
        return self._read()[1]

    def current(self) -> Node | None:
        """The node chosen with ``node use``, or None (the built-in default)."""
        current, nodes = self._read()
        return nodes.get(current) if current else None

    def get(self, name: str) -> Node:
        nodes = self.nodes()
        if name not in nodes:
            known = ", ".join(sorted(nodes)) or "none saved"
            raise SettingsError(
                f"no node named {name!r} ({known}); add it with `taskcast node add`"
            )
        return nodes[name]

    def add(
        self, name: str, url: str, *, token: str | None = None, token_type: TokenType = "jwt"
    ) -> Node:
        """Save (or replace) a node; the first node saved becomes the current one."""
        if not name.strip():
            raise SettingsError("a node name must not be empty")
        if token_type == "admin" and not token:
            raise SettingsError("--token-type admin needs --token (the server's admin token)")
        current, nodes = self._read()
        node = Node(name=name, url=_check_url(url), token=token or None, token_type=token_type)
        nodes[name] = node
        self._write(current or name, nodes)
        return node

    def use(self, name: str) -> Node:
        nodes = self.nodes()
        node = self.get(name)
        self._write(name, nodes)
        return node

    def remove(self, name: str) -> None:
        current, nodes = self._read()
        if name not in nodes:
            raise SettingsError(f"no node named {name!r}")
        del nodes[name]
        self._write(None if current == name else current, nodes)


@dataclass(slots=True, frozen=True, kw_only=True)
class Target:
    """The server a command talks to, and the bearer token to send (after any exchange)."""

    url: str
    token: str | None = None
    node: str | None = None
    """The node name it came from, if any."""


def exchange_admin_token(
    url: str,
    admin_token: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> str | None:
    """``POST /admin/token``: the JWT the admin token buys (None outside ``jwt`` mode).

    Raises:
        SettingsError: the server refused the exchange or could not be reached.
    """
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            response = client.post(f"{url}/admin/token", json={"adminToken": admin_token})
    except httpx.HTTPError as exc:
        raise SettingsError(f"cannot exchange the admin token at {url}: {exc}") from None
    if response.status_code != 200:
        try:
            message = response.json().get("error", "")
        except (ValueError, AttributeError):
            message = ""
        raise SettingsError(
            f"{url} refused the admin token exchange: HTTP {response.status_code}"
            + (f" {message}" if message else "")
        )
    token = response.json().get("token")
    # Outside jwt mode the server answers {"token": ""}: requests need no token at all.
    return token or None


def resolve_target(
    *,
    url: str | None,
    token: str | None,
    node: str | None,
    environ: Mapping[str, str],
    transport: httpx.BaseTransport | None = None,
) -> Target:
    """Which server and token: ``--url`` > ``--node`` > ``$TASKCAST_URL`` > the current node >
    the default (``http://127.0.0.1:3721``).

    The token is ``--token``, else the node's token when the server came from a node, else
    ``$TASKCAST_TOKEN``.
    """
    store = NodeStore.default(environ)
    env_url = environ.get("TASKCAST_URL", "").strip() or None
    env_token = environ.get("TASKCAST_TOKEN", "").strip() or None
    chosen: Node | None = None
    if url:
        base = _check_url(url)
    elif node:
        chosen = store.get(node)
    elif env_url:
        base = _check_url(env_url)
    else:
        chosen = store.current()
        if chosen is None:
            base = DEFAULT_URL
    if chosen is None:
        return Target(url=base, token=token or env_token)
    if token:
        return Target(url=chosen.url, token=token, node=chosen.name)
    node_token = chosen.token
    if node_token and chosen.token_type == "admin":
        node_token = exchange_admin_token(chosen.url, node_token, transport=transport)
    return Target(url=chosen.url, token=node_token, node=chosen.name)
