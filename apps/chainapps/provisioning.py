"""Executing operations: one idempotent step per node, run by the node's region worker.

Flow: ``operation_begin`` (default queue) claims the operation and fans out one
``node_step`` per node to ``region.<code>``; each step drives the runtime driver to the
wanted state and records its outcome under a row lock; the step that completes the set
finishes the operation and derives the app's status. Every step is safe to run twice:
drivers create or adopt objects by deterministic name and labels.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.node_auth import credential_generate, node_auth
from apps.chainapps.node_config import beside_on_engine, node_config
from apps.chainapps.ports import node_release_host_port, start_on_own_port
from apps.chainapps.warm import warm_claim_key
from apps.common.errors import Conflict
from apps.common.incidents import incident, runtime_reason
from apps.common.models import installation_id
from apps.common.scope import work_scope
from apps.runtime.base import (
    Networks,
    PermanentRuntimeError,
    RolledBack,
    RollingUpdates,
    TransientRuntimeError,
    is_transient,
    supports,
)
from apps.runtime.drivers import driver_for_region
from apps.runtime.health import wait_healthy
from apps.runtime.nodeapi import read_chain
from apps.runtime.spec import (
    LABEL_GENERATION,
    NodeSpec,
    NodeStatus,
    Runtime,
    build_node_spec,
    peer_network_name,
)

logger = logging.getLogger(__name__)

STEP_PENDING, STEP_DONE, STEP_FAILED, STEP_CANCELLED = "pending", "done", "failed", "cancelled"
STEP_SKIPPED = "skipped"  # never started: a step of an earlier order failed
# What a step does (upgrade and scale steps name it; the others do what their kind says).
ACTION_UPGRADE, ACTION_REFRESH, ACTION_ADD, ACTION_REMOVE = "upgrade", "refresh", "add", "remove"
ACTION_ROTATE = "rotate"  # same framework, a new API credential (docs/provisioning.md, "Rotating")
# Keys of a step that only matter while it waits for a worker (dropped once it finished).
DISPATCH_KEYS = ("queue", "dispatched_at", "taken_at", "waiting")
LOG_LIMIT = 200
HEARTBEAT_EVERY = 10.0  # seconds between heartbeats while a step waits for a node


class Superseded(Exception):
    """The app's desired state changed under a running operation."""


def runtime_fields(framework: Framework, region) -> Runtime:
    """What a container of ``framework`` on ``region`` runs with (a node's, a warm node's)."""
    return {
        "region_code": region.code,
        "image": framework.image,
        "command": framework.command or None,
        "port": framework.port,
        "health_path": framework.health_path,
        "publish_host": region.publish_host,
        "mem_limit_mb": framework.default_memory_mb,
        "cpus": framework.default_cpus,
        "pids_limit": framework.default_pids,
    }


def node_spec(node: LedgerNode, *, configured: bool = True) -> NodeSpec:
    """The node's spec. ``configured=False`` leaves out the node's configuration (keys,
    credentials): enough to stop, observe or remove a node, and decrypts nothing."""
    app = node.app
    env, secrets = node_config(node) if configured else ({}, {})
    return build_node_spec(
        installation_id=installation_id(),
        tenant_id=str(app.tenant_id),
        app_id=str(app.pk),
        node_id=str(node.pk),
        generation=node.generation,
        **runtime_fields(node.current_framework, node.region),
        env=env,
        secrets=secrets,
        host_port=node.host_port,
        pinned=app.ordering == ChainApp.Ordering.SOLO,  # its chain is on its volume alone
        # A node claimed from a warm node runs under that one's name (apps/chainapps/warm.py).
        name=node.name if node.warm else "",
        warm=node.warm,
        claim_key=warm_claim_key(node.warm) if node.warm and configured else "",
    )


def node_ensure_running(driver, node: LedgerNode) -> NodeStatus:
    """Create or adopt the node and start it; for etcd apps reach the ordering service first.

    Every call is idempotent, in this order: the ordering service exists, the node's
    configuration is built (it includes the app's etcd credentials), the app's network
    exists, then the ordering members are attached to that network while the node starts
    on its own host port (``ports.py``; a port the engine refuses is replaced by the next
    free one) -- independent engine calls side by side; the step waits for both, and the
    node retries etcd until the members are there. A retry repeats them all safely.
    """
    etcd = node.app.ordering == ChainApp.Ordering.ETCD
    if etcd:
        from apps.ordering.services import ordering_ensure

        ordering_ensure()
    spec = node_spec(node)
    attached = joined = None
    if etcd:
        from apps.ordering.services import ordering_attach_begin

        if supports(driver, Networks):  # the process driver has no networks (and no etcd apps)
            driver.ensure_network(spec)
        # The connects run beside the node's start; only members on the node's engine can
        # join its network (those elsewhere are reached by their published endpoints).
        attached = ordering_attach_begin(spec.network, region=node.region)
        if spec.warm and _peers_on_engine(driver, node):
            # A claimed warm node's container exists already: it joins the app's peer network
            # while it takes its claim (a container made now joins after its start, below).
            # Only where a peer shares its engine: elsewhere there is nothing to join, and the
            # thread (with a database connection of its own) would be spent for nothing.
            joined = _beside(
                lambda: node_join_peer_network(driver, node, spec, peers_known=True), f"{node.name} joining its peers"
            )
    try:
        status = start_on_own_port(
            node, driver, lambda port: driver.ensure_node(replace(spec, host_port=port)), what=f"node {node.name}"
        )
    except BaseException:
        for wait in (attached, joined):
            if wait is not None:
                with contextlib.suppress(Exception):  # the start's error is the one to report
                    wait()
        raise
    if attached is not None:
        attached()
        if joined is None or not joined():
            node_join_peer_network(driver, node, spec)
    return status


def _beside(fn, what: str):
    """Start ``fn()`` in a thread of its own (its own database connection, closed after);
    the returned callable waits for it and says whether it succeeded (a failure is logged:
    the caller does it again itself)."""
    from django.db import connection

    def run() -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # noqa: BLE001 - the caller repeats it and sees the error then
            logger.info("%s: %s (done again after the start)", what, exc)
            return False
        finally:
            connection.close()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bsn-beside")
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future.result


def node_start_recorded(driver, node: LedgerNode) -> NodeStatus:
    """``node_ensure_running``, then record where the node runs (not yet verified:
    ``unhealthy`` until ``node_wait_verified``). TransientRuntimeError while the engine
    has published no endpoint for it yet."""
    status = node_ensure_running(driver, node)
    LedgerNode.objects.filter(pk=node.pk).update(
        runtime_id=status.runtime_id or "", endpoint=status.endpoint or "", state=LedgerNode.State.UNHEALTHY
    )
    if not status.endpoint:
        raise TransientRuntimeError(f"{node.name} has no published endpoint yet")
    return status


def node_wait_verified(
    node: LedgerNode, status: NodeStatus, *, timeout: float | None = None, current: bool = False
) -> None:
    """Wait until a started node answers ``/health`` as itself (signed request, reply MAC,
    identity proof with its node key), then record it running. Raises TransientRuntimeError
    when it does not within ``timeout`` (default BSN_NODE_HEALTH_TIMEOUT),
    PermanentRuntimeError without a credential. Provisioning, an operator's restart, a heal
    and the upgrade and scale steps all end here. ``current``: ``node`` is the row as it is
    now, its framework loaded and its credential made (the step that just configured and
    started it); else the row is read again."""
    row = node if current else LedgerNode.objects.select_related("framework", "app__framework").get(pk=node.pk)
    auth = node_auth(row)  # its credential exists by now
    if auth is None:
        raise PermanentRuntimeError(f"node {node.name} has no API credential")
    health_path = row.current_framework.health_path
    wait = settings.BSN_NODE_HEALTH_TIMEOUT if timeout is None else max(1.0, timeout)
    wait_healthy(status.endpoint, health_path, wait, auth=auth, interval=0.02)
    LedgerNode.objects.filter(pk=node.pk).update(
        state=LedgerNode.State.RUNNING, last_seen_at=timezone.now(), last_error=""
    )


def _peer_network(node: LedgerNode) -> str:
    return peer_network_name(installation_id=installation_id(), app_id=str(node.app_id))


def _peers_on_engine(driver, node: LedgerNode) -> bool:
    """Does another node of the app run on this node's engine (so they share a peer network)?"""
    return supports(driver, Networks) and any(beside_on_engine(node, other) for other in node.siblings)


def node_join_peer_network(driver, node: LedgerNode, spec: NodeSpec, *, peers_known: bool = False) -> None:
    """The app's nodes on one engine share an internal network, so that BSN_PEERS can name
    them by container name (``node_config.node_peers``). Internal: no gateway, so joining
    it never moves the node's default route or its published port. Idempotent.
    ``peers_known``: the caller has just found a peer on this engine (no second read)."""
    if not peers_known and not _peers_on_engine(driver, node):
        # The process driver has no networks; a one-node app has no peers; peers on other
        # engines are reached by their published endpoints (node_peers), so a network here
        # would hold this node alone.
        return
    name = _peer_network(node)
    with transaction.atomic():  # parallel node steps of one app: one creates the network
        ChainApp.objects.select_for_update().filter(pk=node.app_id).first()
        driver.ensure_internal_network(name, spec.app_labels)
    driver.connect_to_network(spec.name, name, installation_id=installation_id())


def node_release_ordering(node: LedgerNode, spec: NodeSpec, *, purge: bool) -> None:
    """On delete of an etcd app's node: the app's etcd user goes (idempotent, every node
    step may call it), and the ordering members leave the app's network so that it can
    be removed."""
    from apps.ordering import services as ordering

    ordering.ordering_revoke_app(node.app, purge=purge)
    # The members were attached to the app's network; they must leave it before it can go.
    ordering.ordering_detach(spec.network)


def node_remove(driver, node: LedgerNode, spec: NodeSpec, *, keep_data: bool, app_gone: bool = True) -> None:
    """Remove the node, release what the ordering service holds for it, then its network.

    One path for the delete operation, the reconciler and scaling in; idempotent.
    ``app_gone=False`` (scaling in: the app lives on on its other nodes) keeps the app's
    etcd user and keys; only this node's network is released.
    """
    driver.remove_node(spec, keep_data=keep_data)
    node_release_host_port(node)
    if node.app.ordering == ChainApp.Ordering.ETCD:
        if app_gone:
            node_release_ordering(node, spec, purge=not keep_data)
        else:
            from apps.ordering.services import ordering_detach

            ordering_detach(spec.network)  # the members leave this node's network before it goes
        if supports(driver, Networks):  # the last node of the app on this engine removes it
            driver.remove_unused_network(_peer_network(node), installation_id=installation_id())
    driver.remove_network(spec)


def _append_log(operation_id, message: str, *, detail: str = "", **fields) -> None:
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation_id)
        op.log = [*op.log, Operation.log_line(message, detail)][-LOG_LIMIT:]
        op.heartbeat_at = timezone.now()
        for key, value in fields.items():
            setattr(op, key, value)
        op.save(update_fields=["log", "heartbeat_at", "updated_at", *fields])


def _stale_before():
    return timezone.now() - timedelta(seconds=settings.BSN_OPERATION_STALE_SECONDS)


def operation_claim(operation_id: str) -> tuple[Operation | None, str]:
    """PENDING (or RUNNING with a stale heartbeat) → RUNNING; returns (operation, why-not)."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None:
            return None, "gone"
        stale = op.status == Operation.Status.RUNNING and (op.heartbeat_at is None or op.heartbeat_at < _stale_before())
        if op.status != Operation.Status.PENDING and not stale:
            return None, f"status {op.status}"
        app = ChainApp.objects.select_for_update().get(pk=op.app_id)
        other = (
            Operation.objects.filter(app=app, status=Operation.Status.RUNNING, heartbeat_at__gte=_stale_before())
            .exclude(pk=op.pk)
            .first()
        )
        if other is not None:
            return None, "busy"
        if op.attempts >= op.max_attempts:
            _finish(op, app, Operation.Status.FAILED, f"gave up after {op.attempts} attempts: {op.last_error}")
            return None, "exhausted"
        steps = _plan_steps(op, app)
        for step in steps.values():  # a retried operation retries its failed (and skipped) steps
            if step["state"] in (STEP_FAILED, STEP_SKIPPED):
                step.update(state=STEP_PENDING, error="")
        now = timezone.now()
        verb = "taken over (previous worker stopped)" if stale else "started"
        op.move_to(
            Operation.Status.RUNNING,
            attempts=op.attempts + 1,
            started_at=op.started_at or now,
            heartbeat_at=now,
            steps=steps,
            log=[*op.log, Operation.log_line(f"attempt {op.attempts + 1} {verb}")][-LOG_LIMIT:],
        )
        if op.kind in (Operation.Kind.PROVISION, Operation.Kind.START) and app.status not in (
            ChainApp.Status.DELETING,
        ):
            ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.PROVISIONING)
    return op, ""


def operation_prepare(op: Operation) -> None:
    """What the steps of a new etcd app all need, made once while they are on their way to
    their regions' workers: the app's etcd user and role (``ordering_app_credentials``: a
    spare made ahead, or one made now), and for warm nodes one token of it.
    Made here, no step of the app waits on another's making it; the first step to get there
    waits on the app's row and finds it made. Best effort: on a failure the steps make it
    themselves and report why not, with their retries."""
    if op.kind != Operation.Kind.PROVISION:
        return
    app = ChainApp.objects.filter(pk=op.app_id, ordering=ChainApp.Ordering.ETCD).first()
    if app is None:
        return
    from apps.ordering.services import ordering_app_credentials, ordering_app_token

    try:
        # With a token of the user when warm nodes are claimed: one authentication for them all.
        warm = app.nodes.filter(warm__gt="").exists()
        creds = ordering_app_credentials(app, token=warm)
        if warm and "token" not in creds:
            ordering_app_token(app, creds)  # a spare user: made ahead, without one
    except Exception as exc:  # noqa: BLE001 - the steps do it again and report it
        logger.info("operation %s: the app's etcd user was not made ahead of its steps: %s", op.pk, exc)


def _new_step(*, order: int = 0, action: str = "") -> dict:
    step = {"state": STEP_PENDING, "error": ""}
    if action:
        step.update(order=order, action=action)
    return step


def _plan_steps(op: Operation, app: ChainApp) -> dict[str, dict]:
    """The operation's steps, ``{node id: step}``: those it has (a retried or taken-over
    operation keeps them and their progress), else a fresh plan.

    provision/start/stop: one step per live node, all at once. delete: every node of the
    app, also those scaled away earlier (their kept volumes go too when asked). upgrade:
    one node at a time, by region code (rotate: the same). scale: when nodes are added,
    first the kept nodes one at a time get their configuration refreshed (the new nodes'
    keys and addresses), then the new nodes start (together), then the dropped ones go.
    """
    live = list(app.nodes.exclude(state=LedgerNode.State.REMOVED).select_related("region").order_by("region__code"))
    if op.kind in (Operation.Kind.UPGRADE, Operation.Kind.SCALE, Operation.Kind.ROTATE) and op.steps:
        return {node_id: dict(step) for node_id, step in op.steps.items()}
    if op.kind in (Operation.Kind.UPGRADE, Operation.Kind.ROTATE):
        action = ACTION_UPGRADE if op.kind == Operation.Kind.UPGRADE else ACTION_ROTATE
        return {str(n.pk): _new_step(order=i, action=action) for i, n in enumerate(live)}
    if op.kind == Operation.Kind.SCALE:
        added, removed = set(op.params.get("added", [])), set(op.params.get("removed", []))
        kept = [n for n in live if n.region.code not in added | removed]
        steps = {}
        if added:
            steps = {str(n.pk): _new_step(order=i, action=ACTION_REFRESH) for i, n in enumerate(kept)}
        order = len(steps)
        steps.update({str(n.pk): _new_step(order=order, action=ACTION_ADD) for n in live if n.region.code in added})
        order += bool(added)
        steps.update(
            {str(n.pk): _new_step(order=order, action=ACTION_REMOVE) for n in live if n.region.code in removed}
        )
        return steps
    nodes = list(app.nodes.all()) if op.kind == Operation.Kind.DELETE else live
    return {str(n.pk): dict(op.steps.get(str(n.pk), _new_step())) for n in nodes}


def ready_step_ids(op: Operation) -> list[str]:
    """Pending steps that may run now: those of the lowest order still pending."""
    pending = {node_id: step for node_id, step in op.steps.items() if step["state"] == STEP_PENDING}
    if not pending:
        return []
    first = min(step.get("order", 0) for step in pending.values())
    return [node_id for node_id, step in pending.items() if step.get("order", 0) == first]


def pending_steps(op: Operation) -> list[LedgerNode]:
    """The nodes whose steps may run now (``ready_step_ids``)."""
    return list(LedgerNode.objects.select_related("region").filter(pk__in=ready_step_ids(op)))


def steps_dispatched(operation_id, queues: dict[str, str]) -> None:
    """Remember on which queue and when each pending step was sent, to say so if no worker takes it."""
    now = timezone.now().isoformat()
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation_id)
        steps = dict(op.steps)
        for node_id, queue in queues.items():
            step = steps.get(node_id)
            if step is not None and step["state"] == STEP_PENDING:
                steps[node_id] = {**step, "queue": queue, "dispatched_at": now, "taken_at": None, "waiting": ""}
        op.steps = steps
        op.save(update_fields=["steps", "updated_at"])


def step_taken(operation_id, node_id: str, *, line: str = "") -> None:
    """A worker took the step from its queue (ends a "waiting for a worker" note); ``line``:
    what the step does, for the operation's log (written with it, one write fewer)."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        step = op.steps.get(node_id) if op is not None else None
        if step is None or step["state"] != STEP_PENDING:
            return
        taken = bool(step.get("taken_at"))
        if taken and not line:
            return
        now = timezone.now()
        lines = [line] if line else []
        if not taken:
            op.steps = {**op.steps, node_id: {**step, "taken_at": now.isoformat(), "waiting": ""}}
            if step.get("waiting"):
                lines.insert(0, f"a worker took the step of node {node_id} from queue {step.get('queue')}")
        op.heartbeat_at = now
        op.log = [*op.log, *map(Operation.log_line, lines)][-LOG_LIMIT:]
        op.save(update_fields=["steps", "log", "heartbeat_at", "updated_at"])


def operations_waiting() -> int:
    """Steps no worker has taken within BSN_STEP_PICKUP_SECONDS: say so, once, in the step and the log.

    A step waits on its region's queue (``region.<code>``); nobody takes it when no running
    worker consumes that queue. Returns how many steps got the note.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.BSN_STEP_PICKUP_SECONDS)
    noted = 0
    for operation_id in Operation.objects.filter(status=Operation.Status.RUNNING).values_list("pk", flat=True):
        with transaction.atomic():
            op = Operation.objects.select_for_update(skip_locked=True).filter(pk=operation_id).first()
            if op is None or op.status != Operation.Status.RUNNING:
                continue
            steps, lines = dict(op.steps), []
            for node_id, step in steps.items():
                sent = step.get("dispatched_at")
                if step["state"] != STEP_PENDING or not sent or step.get("taken_at") or step.get("waiting"):
                    continue
                sent_at = datetime.fromisoformat(sent)
                if sent_at > cutoff:
                    continue
                queue = step.get("queue", "")
                code = queue.removeprefix("region.")
                steps[node_id] = {**step, "waiting": f"no worker has taken this step from queue {queue} yet"}
                lines.append(
                    Operation.log_line(
                        f"waiting for a worker on queue {queue} (node {node_id}) for "
                        f"{int((now - sent_at).total_seconds())} s: start a worker that consumes it "
                        f"(manage.py bsn_worker {code}, or bsn_worker with no region codes) or check that it runs"
                    )
                )
            if lines:
                op.steps = steps
                op.log = [*op.log, *lines][-LOG_LIMIT:]
                op.save(update_fields=["steps", "log", "updated_at"])
                noted += len(lines)
    return noted


def _check_still_wanted(op: Operation, app: ChainApp) -> None:
    wanted = {
        Operation.Kind.PROVISION: ChainApp.DesiredState.RUNNING,
        Operation.Kind.START: ChainApp.DesiredState.RUNNING,
        Operation.Kind.STOP: ChainApp.DesiredState.STOPPED,
        Operation.Kind.DELETE: ChainApp.DesiredState.DELETED,
        Operation.Kind.UPGRADE: ChainApp.DesiredState.RUNNING,
        Operation.Kind.SCALE: ChainApp.DesiredState.RUNNING,
        Operation.Kind.ROTATE: ChainApp.DesiredState.RUNNING,
    }[Operation.Kind(op.kind)]
    if app.desired_state != wanted:
        raise Superseded(f"app is now wanted {app.desired_state}")


class _Stage:
    """What a step is doing, in the tenant's words: named in its error when it fails."""

    def __init__(self, now: str) -> None:
        self.now = now


def _node_row(node_id) -> LedgerNode:
    return LedgerNode.objects.select_related("app__framework", "app__tenant", "region", "framework").get(pk=node_id)


def chain_head(app_id, *, exclude=None) -> int:
    """The chain head of the app now: the highest height its running nodes report (read
    together); the highest recorded height when none answers."""
    nodes = list(
        LedgerNode.objects.filter(app_id=app_id, state=LedgerNode.State.RUNNING)
        .exclude(endpoint="")
        .exclude(pk=exclude)
    )

    def read(node: LedgerNode) -> dict | None:
        auth = node_auth(node)
        return read_chain(node.endpoint, auth=auth) if auth is not None else None

    chains = []
    if nodes:
        with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
            chains = [c for c in pool.map(read, nodes) if c is not None]
    if chains:
        return max(int(c.get("height") or 0) for c in chains)
    recorded = LedgerNode.objects.filter(app_id=app_id).exclude(state=LedgerNode.State.REMOVED).exclude(pk=exclude)
    return recorded.aggregate(top=Max("chain_height"))["top"] or 0


def _touch(operation_id) -> None:
    Operation.objects.filter(pk=operation_id, status=Operation.Status.RUNNING).update(heartbeat_at=timezone.now())


def node_wait_height(node: LedgerNode, endpoint: str, height: int, *, deadline: float, operation_id=None) -> int:
    """Wait until the node's chain reaches ``height`` (it fetches what it misses from etcd
    and its peers), recording its chain facts; its height. Raises TransientRuntimeError
    at ``deadline`` (``time.time()``), saying where it got to. Keeps the operation's
    heartbeat fresh while it waits, so no other worker takes it over."""
    auth = node_auth(LedgerNode.objects.get(pk=node.pk))
    if auth is None:
        raise PermanentRuntimeError(f"node {node.name} has no API credential")
    seen, beat = None, time.monotonic()
    while True:
        chain = read_chain(endpoint, auth=auth)
        if chain is not None:
            seen = int(chain.get("height") or 0)
            if seen >= height:
                LedgerNode.objects.filter(pk=node.pk).update(
                    chain_height=seen,
                    chain_head=str(chain.get("head_hash") or "")[:64],
                    chain_proposer=str(chain.get("proposer") or "")[:64],
                    chain_seen_at=timezone.now(),
                )
                return seen
        if time.time() >= deadline:
            where = "does not answer /chain" if seen is None else f"is at height {seen}"
            raise TransientRuntimeError(f"node {node.name} {where}; the chain head is {height}")
        if operation_id is not None and time.monotonic() - beat >= HEARTBEAT_EVERY:
            _touch(operation_id)
            beat = time.monotonic()
        time.sleep(0.2)


def _progress_begin(op: Operation, node: LedgerNode, *, action: str, target: Framework | None) -> dict | None:
    """Once per step, recorded in the step under the operation's lock: the chain head the
    node must reach and when the wait for it began; for a replacement also the node's new
    generation and framework (written to the node row in the same transaction). A retried
    or taken-over step finds them recorded and goes on from there, so a node is never
    replaced twice. None when the step is no longer pending."""
    step = Operation.objects.get(pk=op.pk).steps.get(str(node.pk)) or {}
    if "head" in step:
        return step
    head = chain_head(node.app_id, exclude=node.pk if action == ACTION_ADD else None)
    with transaction.atomic():
        locked = Operation.objects.select_for_update().get(pk=op.pk)
        step = locked.steps.get(str(node.pk)) or {}
        if locked.status != Operation.Status.RUNNING or step.get("state") != STEP_PENDING:
            return None
        if "head" in step:
            return step
        row = LedgerNode.objects.select_for_update(of=("self",)).select_related("framework", "app__framework")
        row = row.get(pk=node.pk)
        progress = {"head": head, "since": time.time()}
        code = node.region.code
        if action == ACTION_ADD:
            line = f"{code}: adding node {row.name}; it must reach the chain head {head}"
        else:
            before = row.current_framework
            after = target or before
            row.generation += 1
            row.framework = after
            changed = ["generation", "framework", "updated_at"]
            if action == ACTION_ROTATE:
                # The new credential is recorded with the new generation, in one write: the
                # replacement is started with it and verified by it; the old one is kept
                # only until the step ends (put back if the runtime rolls back).
                row.api_credential_previous_encrypted = row.api_credential_encrypted
                row.api_credential_encrypted = credential_generate()
                changed += ["api_credential_encrypted", "api_credential_previous_encrypted"]
            row.save(update_fields=changed)
            progress.update({"generation": row.generation, "from": before.slug, "to": after.slug})
            if action == ACTION_ROTATE:
                line = f"{code}: replacing node {row.name} with a new API credential; chain head {head}"
            elif action == ACTION_UPGRADE:
                line = (
                    f"{code}: upgrading node {row.name} from {before.slug} {before.version} to "
                    f"{after.slug} {after.version}; chain head {head}"
                )
            else:
                line = f"{code}: restarting node {row.name} with the app's new node set; chain head {head}"
        step = {**step, **progress}
        locked.steps = {**locked.steps, str(node.pk): step}
        locked.log = [*locked.log, Operation.log_line(line)][-LOG_LIMIT:]
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["steps", "log", "heartbeat_at", "updated_at"])
    return step


class NodeNotBack(PermanentRuntimeError):
    """A node of an upgrade or scale was not healthy at the chain head within its bound.
    ``reason`` is for the tenant (it names the node, never an engine's text)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _bound_reached(progress: dict, node: LedgerNode, exc: BaseException) -> None:
    """A node that is not back within BSN_LIFECYCLE_NODE_TIMEOUT fails its step for good."""
    bound = settings.BSN_LIFECYCLE_NODE_TIMEOUT
    if time.time() - progress["since"] >= bound:
        raise NodeNotBack(
            f"node {node.name} did not come back healthy at the chain head within {bound:g} s ({runtime_reason(exc)})",
            f"{node.name}: {exc}",
        ) from exc


def _bring_up_to_head(op: Operation, node: LedgerNode, driver, where: _Stage, progress: dict) -> tuple[int, float]:
    """Start the node (create or adopt by name and generation), wait until it answers as
    itself and its chain reaches the recorded head; (its height, seconds since the step began)."""
    deadline = progress["since"] + settings.BSN_LIFECYCLE_NODE_TIMEOUT
    try:
        where.now = "starting the node"
        status = node_start_recorded(driver, node)
        _touch(op.pk)
        where.now = "waiting for the node to become healthy"
        node_wait_verified(node, status, timeout=min(settings.BSN_NODE_HEALTH_TIMEOUT, deadline - time.time()))
        _touch(op.pk)
        where.now = "waiting for the node to reach the chain head"
        height = node_wait_height(node, status.endpoint, progress["head"], deadline=deadline, operation_id=op.pk)
    except Exception as exc:
        if is_transient(exc):
            _bound_reached(progress, node, exc)
        raise
    return height, time.time() - progress["since"]


def _step_replace(op: Operation, node: LedgerNode, driver, where: _Stage, *, action: str) -> str:
    """Upgrade (to the operation's framework) or refresh (same framework, configuration
    built anew) one node: stop it, replace its container with a new generation on the same
    data volume, key and credential, and wait until it is healthy at the chain head it
    left. Idempotent: the new generation is recorded once, so a retry adopts the container
    it made."""
    node_id, code = str(node.pk), node.region.code
    target = None
    if action == ACTION_UPGRADE:
        target = Framework.objects.get(slug=op.params["framework"])
        step = op.steps.get(node_id) or {}
        if "head" not in step and node.framework_id == target.pk and node.state == LedgerNode.State.RUNNING:
            return _record_step(op.pk, node_id, STEP_DONE, f"{code}: node {node.name} already runs {target.slug}")
    progress = _progress_begin(op, node, action=action, target=target)
    if progress is None:
        return "skipped"
    node = _node_row(node_id)
    spec = node_spec(node, configured=False)
    try:
        where.now = "stopping the node"
        seen = driver.observe(spec)
        # A driver that rolls updates itself (Swarm: health-gated, rolled back on failure)
        # replaces the running node in ensure_node; stopping it first would defeat that.
        rolls = supports(driver, RollingUpdates)
        if not rolls and seen.state == "running" and seen.labels.get(LABEL_GENERATION) != str(progress["generation"]):
            driver.stop_node(spec)  # a clean stop; the new generation's container replaces it
            LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.STOPPED)
            _touch(op.pk)
    except Exception as exc:
        if is_transient(exc):
            _bound_reached(progress, node, exc)
        raise
    try:
        height, took = _bring_up_to_head(op, node, driver, where, progress)
    except RolledBack:
        # The runtime put the previous generation back (Swarm): the row says so too, so
        # that it names what really runs and a later ensure does not redo the failed update.
        back = {"generation": progress["generation"] - 1, "framework": Framework.objects.get(slug=progress["from"])}
        if action == ACTION_ROTATE:
            back.update(
                api_credential_encrypted=F("api_credential_previous_encrypted"), api_credential_previous_encrypted=""
            )
        LedgerNode.objects.filter(pk=node.pk, generation=progress["generation"]).update(**back)
        raise
    if action == ACTION_ROTATE:
        LedgerNode.objects.filter(pk=node.pk).update(api_credential_previous_encrypted="")
    now_on = node.current_framework
    verb = {
        ACTION_UPGRADE: f"back on {now_on.slug} {now_on.version}",
        ACTION_ROTATE: "back with its new API credential",
    }.get(action, "back with the new node set")
    head = progress["head"]
    message = f"{code}: node {node.name} {verb}, healthy at height {height} (chain head {head}) after {took:.1f} s"
    if rolls:
        update = driver.update_status(spec)
        message += f" (rolling update by the runtime: {update.get('state') or 'not needed'})"
    return _record_step(op.pk, node_id, STEP_DONE, message)


def _step_add(op: Operation, node: LedgerNode, driver, where: _Stage) -> str:
    """Start a node on a region the app was scaled to and wait until it caught up with the
    chain head (from etcd, and from its peers beyond the etcd window)."""
    progress = _progress_begin(op, node, action=ACTION_ADD, target=None)
    if progress is None:
        return "skipped"
    node = _node_row(node.pk)
    height, took = _bring_up_to_head(op, node, driver, where, progress)
    return _record_step(
        op.pk,
        str(node.pk),
        STEP_DONE,
        f"{node.region.code}: node {node.name} added, healthy at height {height} "
        f"(chain head {progress['head']}) after {took:.1f} s",
    )


def _step_remove(op: Operation, node: LedgerNode, driver, spec: NodeSpec, where: _Stage) -> str:
    """Stop (cleanly) and remove a node of a region the app was scaled away from; its data
    volume stays unless ``keep_data`` is false. The app's etcd user and its other nodes stay."""
    keep = bool(op.params.get("keep_data", True))
    where.now = "stopping the node"
    driver.stop_node(spec)
    where.now = "removing the node"
    node_remove(driver, node, spec, keep_data=keep, app_gone=False)
    LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.REMOVED, endpoint="")
    kept = "data volume kept" if keep else "data volume removed"
    return _record_step(op.pk, str(node.pk), STEP_DONE, f"{node.region.code}: node {node.name} removed ({kept})")


def node_step_run(operation_id: str, node_id: str) -> str:
    """Drive one node towards what the operation wants. Returns the step's outcome.

    Raises TransientRuntimeError for the task layer to retry with backoff.
    """
    op = Operation.objects.filter(pk=operation_id).first()
    if op is None or op.status != Operation.Status.RUNNING:
        return "skipped"
    step = op.steps.get(node_id)
    if step is None or step["state"] != STEP_PENDING:
        return "skipped"
    with work_scope():  # rows it asks for several times are read once (apps/common/scope.py)
        return _node_step(op, step, node_id)


def _node_step(op: Operation, step: dict, node_id: str) -> str:
    operation_id = str(op.pk)
    node = (
        LedgerNode.objects.select_related("app__framework", "app__tenant", "region", "framework")
        .filter(pk=node_id)
        .first()
    )
    if node is None:  # one write: recording the step ends its dispatch marks too (DISPATCH_KEYS)
        return _record_step(operation_id, node_id, STEP_DONE, "node row gone")
    action = step.get("action")
    ensuring = not action and op.kind in (Operation.Kind.PROVISION, Operation.Kind.START)
    where = _Stage("preparing the node")
    try:
        spec = node_spec(node, configured=False)  # names and labels; the env is built when starting
        # Taken, and (provision, start) what it does, in one write of the operation's row.
        step_taken(operation_id, node_id, line=f"{node.region.code}: ensuring node {spec.name}" if ensuring else "")
        _check_still_wanted(op, node.app)
        driver = driver_for_region(node.region)
        if action in (ACTION_UPGRADE, ACTION_REFRESH, ACTION_ROTATE):
            return _step_replace(op, node, driver, where, action=action)
        if action == ACTION_ADD:
            return _step_add(op, node, driver, where)
        if action == ACTION_REMOVE:
            return _step_remove(op, node, driver, spec, where)
        if ensuring:
            where.now = "starting the node"
            status = node_start_recorded(driver, node)
            where.now = "waiting for the node to become healthy"
            node_wait_verified(node, status, current=True)  # configured by this step: its credential is on it
            # The endpoint is operator information: in the staff-only detail.
            return _record_step(
                operation_id,
                node_id,
                STEP_DONE,
                f"{node.region.code}: healthy (proved it is node {node.pk})",
                detail=f"at {status.endpoint}",
            )
        if op.kind == Operation.Kind.STOP:
            where.now = "stopping the node"
            driver.stop_node(spec)
            LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.STOPPED, last_seen_at=timezone.now())
            return _record_step(operation_id, node_id, STEP_DONE, f"{node.region.code}: stopped")
        if op.kind == Operation.Kind.DELETE:
            where.now = "removing the node"
            keep = bool(op.params.get("keep_data", True))
            node_remove(driver, node, spec, keep_data=keep)
            LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.REMOVED, endpoint="")
            kept = "data volume kept" if keep else "data volume removed"
            return _record_step(operation_id, node_id, STEP_DONE, f"{node.region.code}: removed ({kept})")
        raise PermanentRuntimeError(f"unknown operation kind {op.kind}")
    except Superseded as exc:
        return _record_step(operation_id, node_id, STEP_CANCELLED, str(exc))
    except NodeNotBack as exc:
        seen = incident(f"{node.region.code}: {exc.reason}; stopped while {where.now}", exc)
        LedgerNode.objects.filter(pk=node_id).update(last_error=seen.message)
        return _record_step(operation_id, node_id, STEP_FAILED, seen.message, detail=seen.detail)
    except PermanentRuntimeError as exc:
        who = f"{node.region.code}: node {node.name}" if step.get("action") else node.region.code
        seen = incident(f"{who}: {where.now} failed: {runtime_reason(exc)}", exc)
        LedgerNode.objects.filter(pk=node_id).update(last_error=seen.message)
        return _record_step(operation_id, node_id, STEP_FAILED, seen.message, detail=seen.detail)
    except Exception as exc:
        if not is_transient(exc):
            raise  # a bug: node_step makes it a visible failure with a reference
        seen = incident(f"{node.region.code}: {where.now}: {runtime_reason(exc)}, will retry", exc)
        LedgerNode.objects.filter(pk=node_id).update(last_error=seen.message)
        _append_log(operation_id, seen.message, detail=seen.detail, last_error=seen.message)
        raise


def step_give_up(operation_id: str, node_id: str, error: str, *, detail: str = "") -> str:
    """Retries are exhausted for this attempt: the step failed (the operation may be retried).

    ``error`` is shown to the tenant (for an upgrade or scale step prefixed with the node's
    region and name: the operation stops at that node); ``detail`` to platform staff only."""
    op = Operation.objects.filter(pk=operation_id).only("steps").first()
    node = LedgerNode.objects.select_related("region").filter(pk=node_id).first()
    lifecycle = op is not None and (op.steps.get(node_id) or {}).get("action")
    if lifecycle and node is not None and not error.startswith(f"{node.region.code}:"):
        error = f"{node.region.code}: node {node.name}: {error}"
    return _record_step(operation_id, node_id, STEP_FAILED, error, detail=detail)


def _record_step(operation_id: str, node_id: str, state: str, message: str, *, detail: str = "") -> str:
    """``message`` is the tenant's (steps, log, last error); ``detail`` staff-only (log entry)."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation_id)
        if op.status != Operation.Status.RUNNING or op.steps.get(node_id, {}).get("state") != STEP_PENDING:
            return "skipped"
        old = {k: v for k, v in op.steps[node_id].items() if k not in DISPATCH_KEYS}
        steps = {**op.steps, node_id: {**old, "state": state, "error": "" if state == STEP_DONE else message}}
        lines = [Operation.log_line(message, detail)]
        if state in (STEP_FAILED, STEP_CANCELLED):
            # Later orders never start: an upgrade stops at the node that did not come back.
            later = [
                other
                for other, step in steps.items()
                if step["state"] == STEP_PENDING and step.get("order", 0) > old.get("order", 0)
            ]
            after = STEP_SKIPPED if state == STEP_FAILED else STEP_CANCELLED
            for other in later:
                kept = {k: v for k, v in steps[other].items() if k not in DISPATCH_KEYS}
                steps[other] = {**kept, "state": after, "error": f"not started: {message}"[:500]}
            if later:
                lines.append(Operation.log_line(f"{len(later)} later step(s) not started"))
        op.steps = steps
        op.log = [*op.log, *lines][-LOG_LIMIT:]
        op.heartbeat_at = timezone.now()
        if state == STEP_FAILED:
            op.last_error = message[:2000]
        op.save(update_fields=["steps", "log", "heartbeat_at", "last_error", "updated_at"])
        if all(s["state"] != STEP_PENDING for s in op.steps.values()):
            app = ChainApp.objects.select_for_update().get(pk=op.app_id)
            _complete(op, app)
        elif state == STEP_DONE:
            _dispatch_ready_on_commit(op)
    return state


def _dispatch_ready_on_commit(op: Operation) -> None:
    """The steps of the next order become ready once the last of this order is done:
    send them to their regions' workers after this transaction commits."""
    ready = [node_id for node_id in ready_step_ids(op) if not op.steps[node_id].get("dispatched_at")]
    if not ready:
        return
    from apps.chainapps.tasks import dispatch_steps

    operation_id = str(op.pk)
    transaction.on_commit(lambda: dispatch_steps(operation_id, ready))


def complete_if_done(operation_id: str) -> None:
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation_id)
        if op.status == Operation.Status.RUNNING and all(s["state"] != STEP_PENDING for s in op.steps.values()):
            _complete(op, ChainApp.objects.select_for_update().get(pk=op.app_id))


def _complete(op: Operation, app: ChainApp) -> None:
    states = {s["state"] for s in op.steps.values()}
    if STEP_CANCELLED in states:
        _finish(op, app, Operation.Status.CANCELLED, "superseded by a newer request")
    elif STEP_FAILED in states:
        failed = [s["error"] for s in op.steps.values() if s["state"] == STEP_FAILED]
        _finish(op, app, Operation.Status.FAILED, "; ".join(failed))
    else:
        _finish(op, app, Operation.Status.SUCCEEDED, "")


def _finish(op: Operation, app: ChainApp, status: str, error: str, **fields) -> None:
    """End the operation (the caller holds its row lock) and derive the app's status."""
    op.move_to(
        status,
        finished_at=timezone.now(),
        last_error=error[:2000] if error else op.last_error,
        log=[*op.log, Operation.log_line(f"{op.kind} {status}" + (f": {error}" if error else ""))][-LOG_LIMIT:],
        **fields,
    )
    if op.kind == Operation.Kind.UPGRADE and status == Operation.Status.SUCCEEDED:
        # Every node runs the new framework now: so does the app. A failed upgrade leaves
        # the app's framework as it was; each node row says what it runs.
        framework = Framework.objects.get(slug=op.params["framework"])
        ChainApp.objects.filter(pk=app.pk).update(framework=framework, updated_at=timezone.now())
        app.framework = framework
    if op.kind == Operation.Kind.SCALE and status != Operation.Status.SUCCEEDED:
        # Nodes a scale added but never started (an earlier step failed, or it was
        # cancelled) are not left for the reconciler to start behind the operation's back.
        never = [
            node_id
            for node_id, step in op.steps.items()
            if step.get("action") == ACTION_ADD and step["state"] in (STEP_SKIPPED, STEP_CANCELLED)
        ]
        LedgerNode.objects.filter(pk__in=never, state=LedgerNode.State.PENDING).update(
            state=LedgerNode.State.REMOVED, updated_at=timezone.now()
        )
    app_refresh_status(app, failed=status == Operation.Status.FAILED, reason=error)
    if op.kind in (Operation.Kind.PROVISION, Operation.Kind.SCALE):
        # Its regions make up for the warm nodes it claimed, now that its steps are done
        # (sent with the create, the refills took the worker's processes from the steps).
        from apps.chainapps.warm import warm_fill_later
        from apps.regions.models import Region

        warm_fill_later(Region.objects.filter(nodes__app=app, warm_nodes__gt=0).distinct())
    if op.kind == Operation.Kind.PROVISION and app.ordering == ChainApp.Ordering.ETCD:
        # Likewise the spare etcd user it took (or found none of): made up after the create.
        from apps.ordering.services import ordering_spares_fill_later

        transaction.on_commit(ordering_spares_fill_later)


def operation_cancel(operation_id: str, *, by: str) -> Operation:
    """Cancel an operation that has not finished: its steps not done yet are marked
    cancelled and a worker that is still on one records nothing more (it checks the
    status at each step). The app keeps its desired state, which the reconciler keeps
    converging to: stop or delete the app to change that. A delete cannot be cancelled
    (its data may be going already). Raises Conflict."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None:
            raise Conflict("No such operation.", code="not-found")
        if op.is_finished:
            raise Conflict(f"Operation {op.pk} already {op.status}.", code="operation-finished")
        if op.kind == Operation.Kind.DELETE:
            raise Conflict("A delete cannot be cancelled.", code="operation-not-cancellable")
        app = ChainApp.objects.select_for_update().get(pk=op.app_id)
        steps = {
            node: {**step, "state": STEP_CANCELLED} if step["state"] == STEP_PENDING else step
            for node, step in op.steps.items()
        }
        _finish(op, app, Operation.Status.CANCELLED, f"cancelled by {by}", steps=steps)
    return op


def _status_from(app: ChainApp, states: list[str], *, failed: bool, chain_ok: bool, reason: str) -> tuple[str, str]:
    """(status, status reason) of ``app`` given its nodes' states (removed ones left out)."""
    if app.desired_state == ChainApp.DesiredState.DELETED:
        status = ChainApp.Status.DELETED if not states else ChainApp.Status.DELETING
    else:
        status = app.derive_status(states, chain_ok=chain_ok)
        none_healthy = LedgerNode.State.RUNNING not in states
        if failed and none_healthy and app.desired_state == ChainApp.DesiredState.RUNNING:
            status = ChainApp.Status.FAILED
    status_reason = (reason or app.status_reason)[:500] if status == ChainApp.Status.FAILED else ""
    return status, status_reason


def app_refresh_status(app: ChainApp, *, failed: bool = False, chain_ok: bool = True, reason: str = "") -> str:
    """Derive and store the app's status from its nodes' observed states (and, from the
    reconciler, whether their chains agree). ``failed``: an operation gave up (``reason``
    says why): with no node healthy the app is then ``failed`` until one is again."""
    states = [s for s in app.nodes.values_list("state", flat=True) if s != LedgerNode.State.REMOVED]
    status, status_reason = _status_from(app, states, failed=failed, chain_ok=chain_ok, reason=reason)
    ChainApp.objects.filter(pk=app.pk).update(status=status, status_reason=status_reason, updated_at=timezone.now())
    app.status, app.status_reason = status, status_reason
    return status


def apps_refresh_status(apps: list[ChainApp], *, chain_ok: dict | None = None) -> dict:
    """``app_refresh_status`` of many apps at once (the reconciler's pass): their nodes'
    states in one query and one UPDATE per distinct outcome, not two statements an app.
    ``chain_ok`` maps an app's pk to its chain verdict (True when absent). Returns
    ``{app pk: status}``."""
    chain_ok = chain_ok or {}
    states: dict = {app.pk: [] for app in apps}
    rows = LedgerNode.objects.filter(app_id__in=list(states)).exclude(state=LedgerNode.State.REMOVED)
    for app_id, state in rows.values_list("app_id", "state"):
        states[app_id].append(state)
    outcome: dict[tuple[str, str], list] = {}
    for app in apps:
        status, status_reason = _status_from(
            app, states[app.pk], failed=False, chain_ok=chain_ok.get(app.pk, True), reason=""
        )
        outcome.setdefault((status, status_reason), []).append(app.pk)
        app.status, app.status_reason = status, status_reason
    now = timezone.now()
    for (status, status_reason), pks in outcome.items():
        ChainApp.objects.filter(pk__in=pks).update(status=status, status_reason=status_reason, updated_at=now)
    return {app.pk: app.status for app in apps}


def stale_operations() -> list[str]:
    """Operations a dead worker left RUNNING, and PENDING ones nobody picked up."""
    running = Operation.objects.filter(status=Operation.Status.RUNNING, heartbeat_at__lt=_stale_before())
    pending = Operation.objects.filter(status=Operation.Status.PENDING, created_at__lt=_stale_before())
    return [str(pk) for pk in running.values_list("pk", flat=True)] + [
        str(pk) for pk in pending.values_list("pk", flat=True)
    ]
