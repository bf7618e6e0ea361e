"""A webhook receiver on loopback, and a trade-finance chain app with its real node."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.node_config import node_config
from apps.chainapps.services import ChainAppSpec, chainapp_create
from apps.gateway.services import appuser_create, gateway_submit
from apps.regions.models import Region
from apps.tenants.models import Role
from bsn.ledger.crypto import generate_private_key, public_key_of
from bsn.ledger.tx import make_tx, sign_tx
from tests.conftest import _client_for
from tests.factories import MembershipFactory, RegionFactory, TenantFactory
from tests.ledger.conftest import Node


@dataclass
class Received:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes
    path: str = ""


class Receiver:
    """A threaded HTTP server on 127.0.0.1 recording every POST; ``status_for`` decides the answer."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status_for: Callable[[Received], int] = lambda r: 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                item = Received(time.monotonic(), dict(self.headers.items()), self.rfile.read(length), self.path)
                with receiver.lock:
                    receiver.received.append(item)
                status = receiver.status_for(item)
                payload = b'{"ok":true}' if status < 300 else b'{"ok":false}'
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url + "/elsewhere")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up (timeout) or was killed: what a real receiver sees too

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def allow_private(settings):
    settings.BSN_WEBHOOKS_ALLOW_PRIVATE = True
    return settings


@dataclass
class TradeApp:
    """Tenant A's trade-finance app, its real node, and two signers (the bank, the seller)."""

    app: ChainApp
    node: Node
    membership: Any
    keys: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def submit(self, signer: str, function: str, args: dict) -> dict:
        self.counter += 1
        nonce = f"t{self.counter}-{time.time_ns()}"
        tx = make_tx(str(self.app.pk), "trade_finance", function, args, signer, nonce=nonce)
        receipt = gateway_submit(app=self.app, envelope=sign_tx(tx, self.keys[signer]))
        assert receipt["status"] == "committed", receipt
        return receipt

    def letter_of_credit(self, lc_id: str, *, outcome: str = "accept") -> list[dict]:
        """issue → present → accept|reject: three events ``issued``, ``presented``, ``accepted|rejected``."""
        lc = {
            "lc_id": lc_id,
            "applicant": "buyer",
            "beneficiary": "seller",
            "amount": 100_000,
            "currency": "CNY",
            "documents_required": ["invoice"],
        }
        receipts = [self.submit("bank", "issue", lc)]
        receipts.append(self.submit("seller", "present", {"lc_id": lc_id, "documents": ["invoice"]}))
        if outcome == "accept":
            receipts.append(self.submit("bank", "accept", {"lc_id": lc_id}))
        else:
            receipts.append(self.submit("bank", "reject", {"lc_id": lc_id, "reason": "documents differ"}))
        return receipts


def start_app_node(app: ChainApp, data_dir) -> Node:
    """Run the app's one node as the real ledger program (what a process region's worker does)."""
    row = LedgerNode.objects.select_related("app", "region").get(app=app)
    env, secrets = node_config(row)
    env.update(BSN_APP_ID=str(app.pk), BSN_NODE_ID=str(row.pk))
    secret_dir = data_dir.parent / f"{data_dir.name}-secrets"
    secret_dir.mkdir(mode=0o700)
    for name, value in secrets.items():  # as the drivers deliver them: files
        path = secret_dir / name.lower()
        path.write_text(value)
        env[f"{name}_FILE"] = str(path)
    node = Node(data_dir, **env).start()
    LedgerNode.objects.filter(pk=row.pk).update(
        state=LedgerNode.State.RUNNING, endpoint=f"http://127.0.0.1:{node.port}", last_seen_at=timezone.now()
    )
    Operation.objects.filter(app=app).open().update(status=Operation.Status.SUCCEEDED)
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.RUNNING)
    app.refresh_from_db()
    return node


@pytest.fixture
def trade_app(db, tmp_path):
    ensure_builtin_framework(Framework)
    region = RegionFactory(code=f"wh-{time.time_ns() % 10**8}", name="wh", driver=Region.Driver.PROCESS)
    membership = MembershipFactory(tenant=TenantFactory(), role=Role.OWNER)
    spec = ChainAppSpec(name="lc-app", framework="bsn-ledger", regions=[region.code], contract_template="trade_finance")
    app = chainapp_create(tenant=membership.tenant, actor=membership.user, spec=spec).app
    ChainApp.objects.filter(pk=app.pk).update(ordering=ChainApp.Ordering.SOLO)
    app.refresh_from_db()
    node = start_app_node(app, tmp_path / "node")
    trade = TradeApp(app=app, node=node, membership=membership)
    for name in ("bank", "seller"):
        private = generate_private_key()
        appuser_create(app=app, actor=membership.user, name=name, public_key=public_key_of(private))
        trade.keys[name] = private
    yield trade
    if node.proc and node.proc.poll() is None:
        node.proc.kill()
        node.proc.wait()


@pytest.fixture
def trade_client(trade_app):
    return _client_for(trade_app.membership)
