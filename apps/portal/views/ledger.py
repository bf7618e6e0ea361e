"""An app's ledger in the portal: chain head, recent blocks and transactions, a block with
its transactions and receipts, a state lookup.

Reads go through the gateway's services (``gateway_chain``, ``gateway_block``,
``gateway_tx``, ``gateway_state``), the ones ``AppLedgerViewSet`` calls: one healthy node
of the app, signed requests, checked answers, connect and read timeouts
(``BSN_GATEWAY_CONNECT_TIMEOUT`` / ``BSN_GATEWAY_READ_TIMEOUT``). A node that does not
answer makes the ledger part say "unavailable" and why; the rest of the page stays. Only
the first failure is waited for: no further node call is made for that page.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404

from apps.chainapps.models import ChainApp
from apps.gateway import services as gateway
from apps.gateway.errors import GatewayError, NodeNotFound
from apps.portal.views.base import PortalView
from apps.runtime.nodeapi import RawJSON
from bsn.ledger.tx import tx_id_of

RECENT_BLOCKS = 5  # node calls per app page: one for the chain, one per block
MAX_RECEIPTS = 50  # receipts fetched for one block page (a batch block can hold 500)
MAX_HEIGHT = 2**63 - 1  # heights are signed 64-bit on the node
CONTRACT_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # as the API's state route


def _when(ms) -> datetime | None:
    """A block timestamp (ms since the epoch) as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _deadline() -> float:
    """When a page stops asking the node for more: one read timeout after it began, so a
    slow node (each answer just within the timeout) costs about two timeouts, not one per call."""
    return time.monotonic() + settings.BSN_GATEWAY_READ_TIMEOUT


def _raw(answer: RawJSON, limit: int = 20_000) -> str:
    """A node's answer too deeply nested to parse, as text (cut at ``limit`` bytes)."""
    return bytes(answer[:limit]).decode("utf-8", "replace")


def _unavailable(exc: GatewayError) -> str:
    return str(exc.detail)


def _tx_rows(block: dict) -> list[dict]:
    rows = []
    for envelope in block.get("txs") or []:
        tx = envelope.get("tx") if isinstance(envelope, dict) else None
        if not isinstance(tx, dict):
            continue
        rows.append(
            {
                "id": tx_id_of(tx),
                "contract": tx.get("contract"),
                "function": tx.get("function"),
                "signer": tx.get("signer"),
                "args": tx.get("args"),
                "height": (block.get("header") or {}).get("height"),
            }
        )
    return rows


def ledger_summary(app: ChainApp, *, count: int = RECENT_BLOCKS) -> dict:
    """``{"chain", "blocks", "txs", "error"}``: the head and the last ``count`` blocks, or
    as much as the node gave before it failed (``error`` says why)."""
    out: dict = {"chain": None, "blocks": [], "txs": [], "error": "", "partial": False}
    out["read_timeout"] = settings.BSN_GATEWAY_READ_TIMEOUT
    deadline = _deadline()
    try:
        chain = gateway.gateway_chain(app=app)
        out["chain"] = chain
        height = int(chain.get("height") or 0) if isinstance(chain, dict) else 0
        for h in range(height, max(0, height - count), -1):
            if time.monotonic() > deadline:  # a slow node: show what came, not wait once per block
                out["partial"] = True
                break
            block = gateway.gateway_block(app=app, height=h)
            if not isinstance(block, dict):  # RawJSON: too deeply nested to parse; its page shows it raw
                out["blocks"].append({"height": h, "hash": "", "tx_count": "?", "time": None, "proposer": ""})
                continue
            header = block.get("header") or {}
            out["blocks"].append(
                {
                    "height": header.get("height", h),
                    "hash": block.get("hash", ""),
                    "tx_count": header.get("tx_count", len(block.get("txs") or [])),
                    "time": _when(header.get("timestamp")),
                    "proposer": header.get("proposer", ""),
                }
            )
            out["txs"].extend(_tx_rows(block))
    except GatewayError as exc:
        out["error"] = _unavailable(exc)
    return out


class _LedgerPage(PortalView):
    section = "apps"

    def get_app(self, pk) -> ChainApp:
        return get_object_or_404(self.scope(ChainApp.objects.select_related("framework", "tenant")), pk=pk)


class BlockView(_LedgerPage):
    def get(self, request, pk, height: int):
        app = self.get_app(pk)
        if height > MAX_HEIGHT:  # the API's route takes at most 19 digits; no node is asked
            raise Http404
        context = {
            "app": app,
            "height": height,
            "blk": None,
            "txs": [],
            "error": "",
            "missing": False,
            "max_receipts": MAX_RECEIPTS,
            "read_timeout": settings.BSN_GATEWAY_READ_TIMEOUT,
        }
        try:
            block = gateway.gateway_block(app=app, height=height)
            if isinstance(block, RawJSON):
                context["raw"] = _raw(block)
                return self.render("portal/apps/block.html", context)
            context["blk"] = block
            context["time"] = _when((block.get("header") or {}).get("timestamp")) if isinstance(block, dict) else None
            rows = _tx_rows(block) if isinstance(block, dict) else []
            deadline = _deadline()
            for row in rows[:MAX_RECEIPTS]:
                if time.monotonic() > deadline:  # a slow node: the rest are shown "not fetched"
                    context["partial"] = True
                    break
                found = gateway.gateway_tx(app=app, tx_id=row["id"])
                row["receipt"] = found.get("receipt") if isinstance(found, dict) else None
            context["txs"] = rows
            context["more"] = max(0, len(rows) - MAX_RECEIPTS)
        except NodeNotFound:
            context["missing"] = True
            return self.render("portal/apps/block.html", context, status=404)
        except GatewayError as exc:
            context["error"] = _unavailable(exc)
            return self.render("portal/apps/block.html", context, status=503)
        return self.render("portal/apps/block.html", context)


class StateView(_LedgerPage):
    """GET ?contract=…&key=…: the key's current value (a read, so no CSRF form)."""

    def get(self, request, pk):
        app = self.get_app(pk)
        contract = request.GET.get("contract", "").strip() or app.contract_template
        key = request.GET.get("key", "")
        context = {"app": app, "contract": contract, "key": key, "errors": {}, "result": None, "missing": False}
        status = 200
        if "key" in request.GET:
            if not CONTRACT_RE.match(contract):
                context["errors"]["contract"] = ["letters, digits and '_' only (1–64)"]
            if not key or "/" in key:  # the API's route takes one path segment
                context["errors"]["key"] = ["enter a key (without '/')"]
            if context["errors"]:
                status = 400
            else:
                try:
                    result = gateway.gateway_state(app=app, contract=contract, key=key)
                    if isinstance(result, RawJSON):
                        context["raw"] = _raw(result)
                    else:
                        context["result"] = result
                except NodeNotFound:
                    context["missing"] = True
                    status = 404
                except GatewayError as exc:
                    context["error"] = _unavailable(exc)
                    status = 503
        return self.render("portal/apps/state.html", context, status=status)
