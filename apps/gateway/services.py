"""The gateway: tenants' signed transactions and reads go to a healthy node of their app.

Node choice: the app's nodes that are ``running`` with a published endpoint, in random
order; a node that cannot be connected to, or whose answer does not prove it is that node
(docs/ledger-protocol.md "Node authentication"), is skipped for the next. A node that was
reached but did not answer in time is a 504: the outcome is unknown, and a retry of the
same signed envelope is safe (the node accepts a ``(signer, nonce)`` once). Node answers
map to problem details (apps.gateway.errors).

App users (public-key upload mode) are registered on the ledger with `_config`
transactions signed by the app's admin key; see ``appuser_create`` for how a write that
the ledger did not confirm is finished by a retry.
"""

from __future__ import annotations

import json
import logging
import math
import random
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.chainapps.keys import key_private
from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.node_auth import node_auth
from apps.chainapps.tasks import node_refresh_later
from apps.common.errors import Conflict, DomainError
from apps.common.incidents import incident
from apps.gateway import ratelimit
from apps.gateway.errors import (
    GatewayError,
    LedgerRefused,
    LedgerUnavailable,
    NodeFailed,
    NodeNotFound,
    NodeRejected,
    NodeTimeout,
    NoHealthyNode,
    OrderingUnavailable,
)
from apps.gateway.models import AppUser
from apps.metering import counters
from apps.runtime.nodeapi import NodeReply, NodeUnreachable, NodeUnverified, node_call, path_segment
from apps.runtime.nodeapi import NodeTimeout as CallTimeout
from bsn.ledger.tx import make_tx, sign_tx, tx_id_of

logger = logging.getLogger(__name__)

ADMIN_SIGNER = "_admin"
CONFIG_CONTRACT = "_config"
REPLAYED_NONCE, STALE_TIMESTAMP, WRONG_APP, MALFORMED = "replayed_nonce", "stale_timestamp", "wrong_app", "malformed"


# --------------------------------------------------------------------------- node choice


def healthy_nodes(app: ChainApp) -> list[LedgerNode]:
    """The app's nodes the gateway may use, in random order (spreads the load)."""
    nodes = list(
        LedgerNode.objects.filter(app=app, state=LedgerNode.State.RUNNING).exclude(endpoint="").select_related("region")
    )
    random.shuffle(nodes)
    return nodes


def _no_node(app: ChainApp, why: str) -> NoHealthyNode:
    return NoHealthyNode(
        f"No healthy node for app '{app.name}' ({app.pk}, status {app.status}): {why}. Retry shortly.",
        extra={"app": str(app.pk)},
    )


def _call(app: ChainApp, method: str, path: str, *, body: Any = None, read_timeout: float) -> NodeReply:
    """One call to the first of the app's healthy nodes that answers *and proves it is that
    node* (``nodeapi``: requests signed with the node's credential, replies MAC-checked).

    A node that does not answer, or whose answer does not prove it (an impostor on its
    port), is skipped for the next; its endpoint is looked at again by the region's worker
    (``node_refresh``): the web process never calls the engine nor decrypts a key for it.
    """
    nodes = healthy_nodes(app)
    if not nodes:
        raise _no_node(app, "none of its nodes is running")
    unreachable = []
    for node in nodes:
        auth = node_auth(node)
        if auth is None:
            unreachable.append(node.region.code)
            continue
        try:
            reply = node_call(
                node.endpoint,
                method,
                path,
                auth=auth,
                body=body,
                connect_timeout=settings.BSN_GATEWAY_CONNECT_TIMEOUT,
                read_timeout=read_timeout,
            )
            counters.note_node(app_id=app.pk, region_id=node.region_id)  # metering: where the work ran
            if method == "POST" and reply.ok:  # the chain moved: the API's node facts follow within seconds
                node_refresh_later(node, facts=True)
            return reply
        except NodeUnreachable as exc:
            unreachable.append(node.region.code)
            verb = "did not prove its identity" if isinstance(exc, NodeUnverified) else "unreachable"
            logger.warning("gateway: node %s of app %s %s", node.name, app.pk, verb)
            node_refresh_later(node)
        except CallTimeout as exc:
            counters.note_node(app_id=app.pk, region_id=node.region_id)
            raise NodeTimeout(
                f"The node of app '{app.name}' in {node.region.code} did not answer within {read_timeout:g}s; "
                "the outcome is unknown. Sending the same signed transaction again is safe.",
                extra={"app": str(app.pk)},
            ) from exc
    raise _no_node(app, f"its nodes in {', '.join(unreachable)} do not answer")


def _detail(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or fallback)
    return fallback


def _result(reply: NodeReply, what: str) -> Any:
    """The reply body on success; the matching problem otherwise."""
    if reply.ok:
        return reply.body
    body = reply.body if isinstance(reply.body, dict) else {}
    if reply.status in (400, 413):  # 413: over the node's transaction or body size limit
        reason = body.get("error")
        if not isinstance(reason, str) or not reason.replace("_", "").isalnum():
            reason = "rejected"
        extra = {"tx_id": body["tx_id"]} if isinstance(body.get("tx_id"), str) else None
        raise NodeRejected(reason, _detail(body, "the node refused the transaction"), extra=extra)
    if reply.status == 404:
        raise NodeNotFound(f"{what} not found on the app's chain.")
    # The node's own words name etcd endpoints, hosts and paths: they go to the staff log
    # under a reference; the tenant gets the reason and the reference.
    if reply.status == 503:
        seen = incident("the app's ordering service is unavailable", _detail(body, "no detail"))
        raise OrderingUnavailable(
            f"The app's ordering is unavailable right now (ref {seen.ref}); retry — "
            "the same signed transaction is never applied twice.",
            extra={"ref": seen.ref},
        )
    if reply.status == 504:
        seen = incident("the node timed out", _detail(body, "no detail"))
        raise NodeTimeout(f"The node timed out (ref {seen.ref}).", extra={"ref": seen.ref})
    seen = incident(f"the node answered HTTP {reply.status}", _detail(body, "no detail"))
    raise NodeFailed(f"The node failed to answer (HTTP {reply.status}, ref {seen.ref}).", extra={"ref": seen.ref})


# --------------------------------------------------------------------------- transactions


def _check_envelope(app: ChainApp, envelope: Any, where: str = "") -> None:
    """Only what the gateway must know before forwarding; the node checks everything else."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("tx"), dict):
        raise NodeRejected(MALFORMED, f'{where}a signed envelope is an object {{"tx": {{...}}, "sig": "..."}}')
    if envelope["tx"].get("app") != str(app.pk):
        raise NodeRejected(
            WRONG_APP, f"{where}tx.app is {envelope['tx'].get('app')!r}, but this is app {app.pk}'s endpoint"
        )


def _app_bucket(app: ChainApp) -> ratelimit.Bucket:
    return ratelimit.Bucket(f"app:{app.pk}", app.tps_quota, app.tps_quota)


def _tenant_bucket(tenant) -> ratelimit.Bucket:
    return ratelimit.Bucket(f"tenant:{tenant.pk}", tenant.max_tps, tenant.max_tps)


def tps_in_use(*, app: ChainApp | None = None, tenant=None) -> int | None:
    """Transactions the app's (or the tenant's) bucket admitted within about the last
    second: its size less what it holds now. None when the buckets do not answer."""
    bucket = _app_bucket(app) if app is not None else _tenant_bucket(tenant)
    try:
        (available,) = ratelimit.store().peek([bucket])
    except ratelimit.Unavailable:
        return None
    return max(0, round(bucket.capacity - available))


def gateway_admit(*, app: ChainApp, count: int) -> None:
    """Take ``count`` transactions from the app's and its tenant's TPS buckets
    (``ratelimit``), or refuse: 429 ``tps-quota-exceeded`` naming the limit, with
    Retry-After; a batch no bucket could ever hold is a 400. Tenant-facing submissions
    only: the platform's own (DCEP anchoring) are not metered against a tenant."""
    buckets = [_app_bucket(app), _tenant_bucket(app.tenant)]
    too_big = [b for b in buckets if count > b.capacity]
    if too_big:
        scope = "app" if too_big[0] is buckets[0] else "tenant"
        raise DomainError(
            f"A batch of {count} transactions is more than the {scope}'s limit of {int(too_big[0].rate)} per "
            f"second; send at most {int(too_big[0].rate)} at once.",
            code="batch-over-tps-quota",
            status=400,
            extra={"limit_tps": int(too_big[0].rate), "scope": scope},
        )
    try:
        verdict = ratelimit.store().take(buckets, count)
    except ratelimit.Unavailable as exc:
        logger.warning("TPS buckets unavailable: %s", exc)
        raise DomainError(
            "The quota service does not answer; nothing was sent. Retry shortly.",
            code="quota-unavailable",
            status=503,
            retry_after=1,
        ) from None
    if verdict.admitted:
        return
    scope = "app" if verdict.refused_by is buckets[0] else "tenant"
    limit = int(verdict.refused_by.rate)
    raise DomainError(
        f"The {scope}'s limit of {limit} transactions per second is reached; retry after "
        f"{verdict.wait_s:.2f} s (quotas are set by platform staff).",
        code="tps-quota-exceeded",
        status=429,
        extra={"limit_tps": limit, "scope": scope},
        retry_after=max(1, math.ceil(verdict.wait_s)),
    )


def _admit_metered(*, app: ChainApp, count: int, body: Any, nbytes: int | None) -> None:
    """A tenant's submission: storage and daily volume (``apps.metering``), then TPS; a
    refusal by either leaves the others as they were."""
    from apps.metering.services import quota_admit, volume_refund

    if nbytes is None:  # not from an HTTP request (custody, tests): the JSON it stands for
        nbytes = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    quota_admit(app=app, nbytes=nbytes)
    try:
        gateway_admit(app=app, count=count)
    except DomainError:
        volume_refund(app=app, nbytes=nbytes)
        raise


def gateway_submit(*, app: ChainApp, envelope: Any, metered: bool = False, nbytes: int | None = None) -> dict:
    """Forward one signed envelope; the receipt once its block is committed. ``metered``:
    a tenant's submission, admitted by the storage, daily-volume (``nbytes``: the request's
    size) and TPS quotas once well formed."""
    _check_envelope(app, envelope)
    if metered:
        _admit_metered(app=app, count=1, body=envelope, nbytes=nbytes)
    reply = _call(app, "POST", "/tx", body=envelope, read_timeout=settings.BSN_GATEWAY_SUBMIT_TIMEOUT)
    return _result(reply, "transaction")


def gateway_submit_batch(*, app: ChainApp, envelopes: Any, metered: bool = False, nbytes: int | None = None) -> dict:
    """Forward ``{"txs": [...]}``; ``{"receipts": [...]}`` in order (rejected items inline).
    ``metered``: as for ``gateway_submit``, every transaction of the batch counted."""
    if not isinstance(envelopes, list) or not envelopes:
        raise NodeRejected(MALFORMED, '"txs" must be a non-empty list of signed envelopes')
    if len(envelopes) > settings.BSN_GATEWAY_MAX_BATCH:
        raise NodeRejected(MALFORMED, f"a batch holds at most {settings.BSN_GATEWAY_MAX_BATCH} transactions")
    for index, envelope in enumerate(envelopes):
        _check_envelope(app, envelope, where=f"txs[{index}]: ")
    if metered:
        _admit_metered(app=app, count=len(envelopes), body={"txs": envelopes}, nbytes=nbytes)
    reply = _call(app, "POST", "/tx/batch", body={"txs": envelopes}, read_timeout=settings.BSN_GATEWAY_SUBMIT_TIMEOUT)
    return _result(reply, "batch")


def gateway_read(*, app: ChainApp, path: str, what: str) -> Any:
    """A read (GET) from one healthy node."""
    return _result(_call(app, "GET", path, read_timeout=settings.BSN_GATEWAY_READ_TIMEOUT), what)


def gateway_tx(*, app: ChainApp, tx_id: str) -> dict:
    return gateway_read(app=app, path=f"/tx/{path_segment(tx_id.lower())}", what=f"Transaction {tx_id}")


def gateway_block(*, app: ChainApp, height: int) -> dict:
    return gateway_read(app=app, path=f"/blocks/{int(height)}", what=f"Block {height}")


def gateway_state(*, app: ChainApp, contract: str, key: str) -> dict:
    path = f"/state/{path_segment(contract)}/{path_segment(key)}"
    return gateway_read(app=app, path=path, what=f"Key {key!r} of contract {contract}")


def gateway_chain(*, app: ChainApp) -> dict:
    chain = gateway_read(app=app, path="/chain", what="Chain")
    if isinstance(chain, dict):
        chain.pop("identity", None)  # the node's proof for the gateway's own challenge, not the tenant's
    return chain


def gateway_query(*, app: ChainApp, contract: str, function: str, args: dict) -> Any:
    """A read-only contract function (``POST /query`` on one healthy node); its result."""
    body = {"contract": contract, "function": function, "args": args}
    reply = _call(app, "POST", "/query", body=body, read_timeout=settings.BSN_GATEWAY_READ_TIMEOUT)
    return _result(reply, f"{contract}.{function}")["result"]


# --------------------------------------------------------------------------- app users
#
# Choice (see docs/gateway.md): the row is written first as ``pending`` with the signed
# envelope, then the envelope goes to a node. Confirmed → ``active``. Refused for good
# (a failed receipt, a rejection) → the row is removed, nothing half-done stays. Not
# confirmed (no node, timeout, ordering down) → 503 and the row stays ``pending``; the
# same request again re-sends the *same* envelope and finishes it. Because the nonce is
# fixed per user and action, the ledger applies it at most once, and a replayed nonce is
# resolved by reading the original transaction's receipt. Revoke works the same way
# through ``revoking``.


def _admin_envelope(app: ChainApp, user: AppUser, action: str) -> dict:
    args = {"name": user.name, "public_key": user.public_key} if action == "add" else {"name": user.name}
    tx = make_tx(str(app.pk), CONFIG_CONTRACT, f"user.{action}", args, ADMIN_SIGNER, nonce=user.nonce(action))
    return sign_tx(tx, key_private(app.admin_private_key_encrypted))


class Definitive(Exception):
    """The ledger refused for good."""


def submit_until_final(*, app: ChainApp, envelope: dict, resign, earlier: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Send a control-plane envelope until the ledger answers for good: ``(receipt, envelope)``.

    The envelope's nonce is fixed by the caller, so the ledger applies it at most once. A
    replayed nonce means an earlier send committed: its receipt is looked up (by this
    envelope's tx id and the ``earlier`` ones). A stale timestamp with nothing committed is
    signed again with the same nonce (``resign()`` returns and stores the new envelope).
    Raises GatewayError (transient: try again later) or Definitive (refused for good).
    """
    for _ in range(2):  # a second round only after re-signing a stale envelope
        tx_id = tx_id_of(envelope["tx"])
        try:
            receipt = gateway_submit(app=app, envelope=envelope)
        except NodeRejected as exc:
            if exc.reason not in (REPLAYED_NONCE, STALE_TIMESTAMP):
                raise Definitive(f"{exc.reason}: {exc.detail}") from exc
            # Sent before: did that one commit?
            found = None
            for candidate in (tx_id, *earlier):
                try:
                    found = gateway_tx(app=app, tx_id=candidate)
                    break
                except NodeNotFound:
                    continue
            if found is not None:
                receipt = found.get("receipt", found)
            elif exc.reason == STALE_TIMESTAMP:
                # Never committed and now too old: sign again, same nonce (still unused).
                earlier = (*earlier, tx_id)
                envelope = resign()
                continue
            else:
                raise LedgerUnavailable(
                    "The ledger has this change but has not committed it yet; send the same request again."
                ) from exc
        status = receipt.get("status") if isinstance(receipt, dict) else None
        if status == "committed":
            return receipt, envelope
        if status == "failed":
            raise Definitive(f"the transaction failed: {receipt.get('error')}")
        raise LedgerUnavailable(f"The node's answer is not a receipt ({status!r}); send the same request again.")
    raise LedgerUnavailable("The ledger did not accept the change in time; send the same request again.")


def _confirm(app: ChainApp, user: AppUser, action: str) -> dict:
    """Send the user's pending envelope until the ledger answers for good; the receipt.

    Raises GatewayError (transient: try again later) or Definitive.
    """

    def resign() -> dict:
        user.pending_tx = _admin_envelope(app, user, action)
        AppUser.objects.filter(pk=user.pk).update(pending_tx=user.pending_tx)
        return user.pending_tx

    if not user.pending_tx:
        resign()
    receipt, _ = submit_until_final(app=app, envelope=user.pending_tx, resign=resign)
    return receipt


def _unconfirmed(user: AppUser, exc: GatewayError, *, state: str, again: str) -> GatewayError:
    """The 503 for a change the ledger has not confirmed yet (the row stays ``state``)."""
    AppUser.objects.filter(pk=user.pk).update(last_error=str(exc.detail)[:2000])
    if isinstance(exc, NoHealthyNode):
        return NoHealthyNode(f"{exc.detail} User '{user.name}' is kept as {state}; {again}", extra=exc.problem_extra)
    return LedgerUnavailable(
        f"The ledger did not confirm the change for user '{user.name}' ({exc.detail}). "
        f"The user is kept as {state}; {again}",
        extra={"cause": exc.problem_code or exc.default_code},
    )


def appuser_reserve(*, app: ChainApp, actor, name: str, public_key: str, mode: str = AppUser.Mode.UPLOAD):
    """The ``pending`` row of a registration: ``(user, created)``. Call inside a transaction.

    An existing row is returned only when it is the same registration left unfinished
    (pending, same mode, and in upload mode the same key); anything else is a 409
    ``duplicate-name``. Custody mode generates its key itself, so a retry finishes the
    pending row with the key already stored for it.
    """
    if app.desired_state == ChainApp.DesiredState.DELETED:
        raise Conflict("This app is deleted.", code="app-deleted")
    duplicate = Conflict(f"A user named '{name}' already exists in this app.", code="duplicate-name")
    user = AppUser.objects.select_for_update().filter(app=app, name=name).first()
    if user is not None:
        unfinished = user.status == AppUser.Status.PENDING and user.mode == mode
        if not unfinished or (mode == AppUser.Mode.UPLOAD and user.public_key != public_key):
            raise duplicate
        return user, False
    try:
        with transaction.atomic():
            user = AppUser.objects.create(
                app=app,
                name=name,
                public_key=public_key,
                mode=mode,
                status=AppUser.Status.PENDING,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
    except IntegrityError as exc:  # a concurrent create of the same name
        raise duplicate from exc
    user.pending_tx = _admin_envelope(app, user, "add")
    user.save(update_fields=["pending_tx", "updated_at"])
    return user, True


def appuser_register(*, user: AppUser, actor, request=None) -> AppUser:
    """Send a reserved user's `_config` ``user.add`` until the ledger answers; the row once
    confirmed (``active``, audited). Refused for good: the row (and what hangs on it) is
    removed. Not confirmed: 503 and the row stays ``pending`` for a retry to finish."""
    app, name = user.app, user.name
    try:
        receipt = _confirm(app, user, "add")
    except Definitive as exc:
        AppUser.objects.filter(pk=user.pk, status=AppUser.Status.PENDING).delete()
        raise LedgerRefused(f"The ledger refused user '{name}': {exc}. Nothing was created.") from exc
    except GatewayError as exc:
        raise _unconfirmed(user, exc, state="pending", again="send the same request again to finish.") from exc
    with transaction.atomic():
        AppUser.objects.filter(pk=user.pk, status=AppUser.Status.PENDING).update(
            status=AppUser.Status.ACTIVE, pending_tx=None, last_error="", activated_at=timezone.now()
        )
        audit_record(
            action="appuser.create",
            object_type="appuser",
            object_id=user.pk,
            tenant=app.tenant,
            actor=actor,
            data={
                "app": str(app.pk),
                "name": name,
                "mode": user.mode,
                "public_key": user.public_key,
                "tx_id": receipt.get("tx_id"),
            },
            request=request,
        )
    return AppUser.objects.get(pk=user.pk)


def appuser_create(*, app: ChainApp, actor, name: str, public_key: str, request=None) -> AppUser:
    """Register ``name`` with ``public_key`` (upload mode) on the app's ledger; the row once
    confirmed. Sending the same name and key again finishes a registration left ``pending``.
    Custody mode: ``apps.custody.services.custody_user_create``."""
    with transaction.atomic():
        user, _ = appuser_reserve(app=app, actor=actor, name=name, public_key=public_key)
    return appuser_register(user=user, actor=actor, request=request)


def appuser_revoke(*, user: AppUser, actor, request=None) -> AppUser:
    """Revoke the user on the app's ledger; the row once confirmed. Revoking twice is fine."""
    app = user.app
    with transaction.atomic():
        user = AppUser.objects.select_for_update().get(pk=user.pk)
        if user.status == AppUser.Status.REVOKED:
            return user
        if user.status == AppUser.Status.PENDING:
            raise Conflict(
                f"User '{user.name}' is not registered yet (pending); "
                "send the create request again to finish it first.",
                code="user-pending",
            )
        if user.status == AppUser.Status.ACTIVE:
            user.status = AppUser.Status.REVOKING
            user.pending_tx = _admin_envelope(app, user, "revoke")
            user.save(update_fields=["status", "pending_tx", "updated_at"])
    try:
        receipt = _confirm(app, user, "revoke")
    except Definitive as exc:
        AppUser.objects.filter(pk=user.pk, status=AppUser.Status.REVOKING).update(
            status=AppUser.Status.ACTIVE, pending_tx=None, last_error=str(exc)[:2000]
        )
        raise LedgerRefused(f"The ledger refused to revoke user '{user.name}': {exc}. It stays active.") from exc
    except GatewayError as exc:
        raise _unconfirmed(user, exc, state="revoking", again="send the same request again to finish.") from exc
    with transaction.atomic():
        AppUser.objects.filter(pk=user.pk, status=AppUser.Status.REVOKING).update(
            status=AppUser.Status.REVOKED, pending_tx=None, last_error="", revoked_at=timezone.now()
        )
        if user.mode == AppUser.Mode.CUSTODY:
            # In the transaction that marks it revoked: no revoked custody user keeps a key.
            # Imported here: custody sits above the gateway (it signs through it).
            from apps.custody.services import custody_key_destroy

            custody_key_destroy(user=user)
        audit_record(
            action="appuser.revoke",
            object_type="appuser",
            object_id=user.pk,
            tenant=app.tenant,
            actor=actor,
            data={"app": str(app.pk), "name": user.name, "tx_id": receipt.get("tx_id")},
            request=request,
        )
    return AppUser.objects.get(pk=user.pk)
