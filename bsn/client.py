"""A small Python client for tenants: sign transactions locally, send them through the gateway.

    from bsn.client import Client, generate_key

    private, public = generate_key()          # keep `private` secret; `public` is registered
    client = Client("https://bsn.example", token, app_id, "alice", private)
    client.register()                         # once: app user "alice" with that public key
    receipt = client.submit("kv", "put", {"key": "greeting", "value": "ni hao"})
    print(client.state("kv", "greeting")["value"], client.block(receipt["height"])["hash"])

The private key never leaves this process: transactions are signed here with Ed25519
over their canonical JSON (docs/ledger-protocol.md) using the ledger's own helpers, so
signer and verifier cannot disagree. Needs only ``requests`` and ``cryptography``;
installable on its own: ``pip install <this repository>`` (pyproject.toml) installs
``bsn.client`` with the ledger's signing code and nothing of the control plane.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import requests

from bsn.ledger.crypto import generate_private_key, public_key_of
from bsn.ledger.tx import make_tx, sign_tx, tx_id_of

__all__ = ["Client", "ClientError", "generate_key", "sign_call", "tx_id_of"]


def generate_key() -> tuple[str, str]:
    """A new Ed25519 key pair ``(private_b64, public_b64)``: keep the first, register the second."""
    private = generate_private_key()
    return private, public_key_of(private)


def sign_call(
    app_id: str,
    user: str,
    private_key_b64: str,
    contract: str,
    function: str,
    args: dict[str, Any] | None = None,
    *,
    nonce: str | None = None,
) -> dict[str, Any]:
    """The signed envelope ``{"tx", "sig"}`` of one contract call by ``user``: a fresh nonce
    (uuid4 hex) unless one is given, the time in ms. The platform's key custody signs with
    this very function, so a custodied user's transactions have the client's shape."""
    tx = make_tx(str(app_id), contract, function, dict(args or {}), user, nonce=nonce or uuid.uuid4().hex)
    return sign_tx(tx, private_key_b64)


class ClientError(Exception):
    """The gateway answered with a problem (RFC 9457): ``status``, ``code``, ``detail``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code = str(problem.get("code") or "error")
        self.detail = str(problem.get("detail") or problem)
        super().__init__(f"{status} {self.code}: {self.detail}")

    @property
    def retryable(self) -> bool:
        """503/504: resend the same envelope (its nonce makes a double apply impossible)."""
        return self.status in (502, 503, 504)


class Client:
    """One app user talking to one chain app through the control plane's gateway."""

    def __init__(
        self,
        base_url: str,
        token: str,
        app_id: str,
        user: str,
        private_key_b64: str,
        *,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_id = str(app_id)
        self.user = user
        self._private_key = private_key_b64
        self.public_key = public_key_of(private_key_b64)  # fails early on a bad key
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Token {token}", "Accept": "application/json"})

    def __repr__(self) -> str:  # never the private key
        return f"Client({self.base_url!r}, app={self.app_id!r}, user={self.user!r})"

    # -- signing

    def sign(self, contract: str, function: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """A signed envelope ``{"tx", "sig"}`` with a fresh nonce (uuid4 hex) and the time in ms."""
        return sign_call(self.app_id, self.user, self._private_key, contract, function, args)

    # -- the app user

    def register(self) -> dict[str, Any]:
        """Register this client's user (``user``, its public key) on the app: once, by a
        token of a member who may manage app users. ClientError 409 if the name is taken."""
        return self._request("POST", "users", json={"name": self.user, "public_key": self.public_key})

    # -- writes

    def submit(self, contract: str, function: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sign and submit one transaction; its receipt once the block is committed."""
        return self.submit_envelope(self.sign(contract, function, args))

    def submit_envelope(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Submit an envelope signed earlier (e.g. resend after a 503/504)."""
        return self._request("POST", "transactions", json=envelope)

    def submit_batch(self, calls: list[Any]) -> list[dict[str, Any]]:
        """Sign and submit several transactions at once; their receipts in order.

        ``calls`` holds ``(contract, function, args)`` tuples, ``{"contract", "function",
        "args"}`` dicts, or envelopes already signed. A rejected item comes back with
        ``status: "rejected"`` and its ``error``; the others are still applied.
        """
        envelopes = []
        for call in calls:
            if isinstance(call, dict) and "tx" in call:
                envelopes.append(call)
            elif isinstance(call, dict):
                envelopes.append(self.sign(call["contract"], call["function"], call.get("args")))
            else:
                envelopes.append(self.sign(*call))
        return self._request("POST", "transactions", json={"txs": envelopes})["receipts"]

    # -- reads

    def tx(self, tx_id: str) -> dict[str, Any]:
        """``{"receipt", "tx"}`` of a committed transaction."""
        return self._request("GET", f"transactions/{quote(tx_id, safe='')}")

    def block(self, height: int) -> dict[str, Any]:
        return self._request("GET", f"blocks/{int(height)}")

    def state(self, contract: str, key: str) -> dict[str, Any]:
        """``{"contract", "key", "value"}``; ClientError 404 if the key has no value."""
        return self._request("GET", f"state/{quote(contract, safe='')}/{quote(key, safe='')}")

    def chain(self) -> dict[str, Any]:
        return self._request("GET", "chain")

    # -- plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/api/v1/apps/{self.app_id}/{path}"
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"code": "bad-reply", "detail": response.text[:500]}
        if response.status_code >= 400:
            raise ClientError(response.status_code, body if isinstance(body, dict) else {"detail": body})
        return body
