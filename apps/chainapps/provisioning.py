"""Executing operations: one idempotent step per node, run by the node's region worker.

Flow: ``operation_begin`` (default queue) claims the operation and fans out one
``node_step`` per node to ``region.<code>``; each step drives the runtime driver to the
wanted state and records its outcome under a row lock; the step that completes the set
finishes the operation and derives the app's status. Every step is safe to run twice:
drivers create or adopt objects by deterministic name and labels.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.chainapps.node_auth import node_auth
from apps.chainapps.node_config import node_config, node_siblings
from apps.chainapps.ports import node_release_host_port, start_on_own_port
from apps.common.errors import Conflict
from apps.common.incidents import incident, runtime_reason
from apps.common.models import installation_id
from apps.runtime.base import Networks, PermanentRuntimeError, TransientRuntimeError, is_transient, supports
from apps.runtime.drivers import driver_for_region
from apps.runtime.health import wait_healthy
from apps.runtime.spec import NodeSpec, NodeStatus, build_node_spec, peer_network_name

logger = logging.getLogger(__name__)

STEP_PENDING, STEP_DONE, STEP_FAILED, STEP_CANCELLED = "pending", "done", "failed", "cancelled"
LOG_LIMIT = 200


class Superseded(Exception):
    """The app's desired state changed under a running operation."""


def node_spec(node: LedgerNode, *, configured: bool = True) -> NodeSpec:
    """The node's spec. ``configured=False`` leaves out the node's configuration (keys,
    credentials): enough to stop, observe or remove a node, and decrypts nothing."""
    app, framework, region = node.app, node.app.framework, node.region
    env, secrets = node_config(node) if configured else ({}, {})
    return build_node_spec(
        installation_id=installation_id(),
        tenant_id=str(app.tenant_id),
        app_id=str(app.pk),
        node_id=str(node.pk),
        region_code=region.code,
        generation=node.generation,
        image=framework.image,
        command=framework.command or None,
        port=framework.port,
        health_path=framework.health_path,
        publish_host=region.publish_host,
        mem_limit_mb=framework.default_memory_mb,
        cpus=framework.default_cpus,
        pids_limit=framework.default_pids,
        env=env,
        secrets=secrets,
        host_port=node.host_port,
    )


def node_ensure_running(driver, node: LedgerNode) -> NodeStatus:
    """Create or adopt the node and start it; for etcd apps reach the ordering service first.

    Every call is idempotent, in this order: the ordering service exists, the node's
    configuration is built (it includes the app's etcd credentials), the app's network
    exists, the ordering service is attached to that network (so the node can reach etcd
    from its first second), then the node, on its own host port (``ports.py``; a port
    the engine refuses is replaced by the next free one). A retry repeats them all safely.
    """
    etcd = node.app.ordering == ChainApp.Ordering.ETCD
    if etcd:
        from apps.ordering.services import ordering_ensure

        ordering_ensure()
    spec = node_spec(node)
    if etcd:
        from apps.ordering.services import ordering_attach

        if supports(driver, Networks):  # the process driver has no networks (and no etcd apps)
            driver.ensure_network(spec)
        ordering_attach(spec.network)
    status = start_on_own_port(
        node, driver, lambda port: driver.ensure_node(replace(spec, host_port=port)), what=f"node {node.name}"
    )
    if etcd:
        node_join_peer_network(driver, node, spec)
    return status


def node_wait_verified(node: LedgerNode, status: NodeStatus) -> None:
    """Wait until a started node answers ``/health`` as itself (signed request, reply MAC,
    identity proof with its node key), then record it running. Raises TransientRuntimeError
    when it does not within BSN_NODE_HEALTH_TIMEOUT, PermanentRuntimeError without a
    credential. Provisioning, an operator's restart and a heal all end here."""
    auth = node_auth(LedgerNode.objects.get(pk=node.pk))  # its credential exists by now
    if auth is None:
        raise PermanentRuntimeError(f"node {node.name} has no API credential")
    health_path = node.app.framework.health_path
    wait_healthy(status.endpoint, health_path, settings.BSN_NODE_HEALTH_TIMEOUT, auth=auth, interval=0.02)
    LedgerNode.objects.filter(pk=node.pk).update(
        state=LedgerNode.State.RUNNING, last_seen_at=timezone.now(), last_error=""
    )


def _peer_network(node: LedgerNode) -> str:
    return peer_network_name(installation_id=installation_id(), app_id=str(node.app_id))


def node_join_peer_network(driver, node: LedgerNode, spec: NodeSpec) -> None:
    """The app's nodes on one engine share an internal network, so that BSN_PEERS can name
    them by container name (``node_config.node_peers``). Internal: no gateway, so joining
    it never moves the node's default route or its published port. Idempotent."""
    if not supports(driver, Networks):
        return  # the process driver has no networks
    if not node_siblings(node):
        return  # a one-node app has no peers
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


def node_remove(driver, node: LedgerNode, spec: NodeSpec, *, keep_data: bool) -> None:
    """Remove the node, release what the ordering service holds for it, then its network.

    One path for the delete operation and the reconciler; idempotent.
    """
    driver.remove_node(spec, keep_data=keep_data)
    node_release_host_port(node)
    if node.app.ordering == ChainApp.Ordering.ETCD:
        node_release_ordering(node, spec, purge=not keep_data)
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
        nodes = list(app.nodes.all())
        steps = {str(n.pk): op.steps.get(str(n.pk), {"state": STEP_PENDING, "error": ""}) for n in nodes}
        for step in steps.values():  # a retried operation retries its failed steps
            if step["state"] == STEP_FAILED:
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


def pending_steps(op: Operation) -> list[LedgerNode]:
    ids = [node_id for node_id, step in op.steps.items() if step["state"] == STEP_PENDING]
    return list(LedgerNode.objects.select_related("region").filter(pk__in=ids))


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


def step_taken(operation_id, node_id: str) -> None:
    """A worker took the step from its queue (ends a "waiting for a worker" note)."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        step = op.steps.get(node_id) if op is not None else None
        if step is None or step["state"] != STEP_PENDING or step.get("taken_at"):
            return
        now = timezone.now()
        op.steps = {**op.steps, node_id: {**step, "taken_at": now.isoformat(), "waiting": ""}}
        op.heartbeat_at = now
        if step.get("waiting"):
            line = Operation.log_line(f"a worker took the step of node {node_id} from queue {step.get('queue')}")
            op.log = [*op.log, line][-LOG_LIMIT:]
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
    }[Operation.Kind(op.kind)]
    if app.desired_state != wanted:
        raise Superseded(f"app is now wanted {app.desired_state}")


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
    step_taken(operation_id, node_id)
    node = LedgerNode.objects.select_related("app__framework", "app__tenant", "region").filter(pk=node_id).first()
    if node is None:
        return _record_step(operation_id, node_id, STEP_DONE, "node row gone")
    stage = "preparing the node"  # what failed, in the tenant's words
    try:
        _check_still_wanted(op, node.app)
        driver = driver_for_region(node.region)
        spec = node_spec(node, configured=False)  # names and labels; the env is built when starting
        if op.kind in (Operation.Kind.PROVISION, Operation.Kind.START):
            _append_log(operation_id, f"{node.region.code}: ensuring node {spec.name}")
            stage = "starting the node"
            status = node_ensure_running(driver, node)
            LedgerNode.objects.filter(pk=node.pk).update(
                runtime_id=status.runtime_id or "", endpoint=status.endpoint or "", state=LedgerNode.State.UNHEALTHY
            )
            if not status.endpoint:
                raise TransientRuntimeError(f"{spec.name} has no published endpoint yet")
            stage = "waiting for the node to become healthy"
            node_wait_verified(node, status)
            # The endpoint is operator information: in the staff-only detail.
            return _record_step(
                operation_id,
                node_id,
                STEP_DONE,
                f"{node.region.code}: healthy (proved it is node {node.pk})",
                detail=f"at {status.endpoint}",
            )
        if op.kind == Operation.Kind.STOP:
            stage = "stopping the node"
            driver.stop_node(spec)
            LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.STOPPED, last_seen_at=timezone.now())
            return _record_step(operation_id, node_id, STEP_DONE, f"{node.region.code}: stopped")
        if op.kind == Operation.Kind.DELETE:
            stage = "removing the node"
            keep = bool(op.params.get("keep_data", True))
            node_remove(driver, node, spec, keep_data=keep)
            LedgerNode.objects.filter(pk=node.pk).update(state=LedgerNode.State.REMOVED, endpoint="")
            kept = "data volume kept" if keep else "data volume removed"
            return _record_step(operation_id, node_id, STEP_DONE, f"{node.region.code}: removed ({kept})")
        raise PermanentRuntimeError(f"unknown operation kind {op.kind}")
    except Superseded as exc:
        return _record_step(operation_id, node_id, STEP_CANCELLED, str(exc))
    except PermanentRuntimeError as exc:
        seen = incident(f"{node.region.code}: {stage} failed: {runtime_reason(exc)}", exc)
        LedgerNode.objects.filter(pk=node_id).update(last_error=seen.message)
        return _record_step(operation_id, node_id, STEP_FAILED, seen.message, detail=seen.detail)
    except Exception as exc:
        if not is_transient(exc):
            raise  # a bug: node_step makes it a visible failure with a reference
        seen = incident(f"{node.region.code}: {stage}: {runtime_reason(exc)}, will retry", exc)
        LedgerNode.objects.filter(pk=node_id).update(last_error=seen.message)
        _append_log(operation_id, seen.message, detail=seen.detail, last_error=seen.message)
        raise


def step_give_up(operation_id: str, node_id: str, error: str, *, detail: str = "") -> str:
    """Retries are exhausted for this attempt: the step failed (the operation may be retried).

    ``error`` is shown to the tenant; ``detail`` to platform staff only."""
    return _record_step(operation_id, node_id, STEP_FAILED, error, detail=detail)


def _record_step(operation_id: str, node_id: str, state: str, message: str, *, detail: str = "") -> str:
    """``message`` is the tenant's (steps, log, last error); ``detail`` staff-only (log entry)."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation_id)
        if op.status != Operation.Status.RUNNING or op.steps.get(node_id, {}).get("state") != STEP_PENDING:
            return "skipped"
        op.steps = {**op.steps, node_id: {"state": state, "error": "" if state == STEP_DONE else message}}
        op.log = [*op.log, Operation.log_line(message, detail)][-LOG_LIMIT:]
        op.heartbeat_at = timezone.now()
        if state == STEP_FAILED:
            op.last_error = message[:2000]
        op.save(update_fields=["steps", "log", "heartbeat_at", "last_error", "updated_at"])
        if all(s["state"] != STEP_PENDING for s in op.steps.values()):
            app = ChainApp.objects.select_for_update().get(pk=op.app_id)
            _complete(op, app)
    return state


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
    app_refresh_status(app, failed=status == Operation.Status.FAILED, reason=error)


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


def app_refresh_status(app: ChainApp, *, failed: bool = False, chain_ok: bool = True, reason: str = "") -> str:
    """Derive and store the app's status from its nodes' observed states (and, from the
    reconciler, whether their chains agree). ``failed``: an operation gave up (``reason``
    says why): with no node healthy the app is then ``failed`` until one is again."""
    states = [s for s in app.nodes.values_list("state", flat=True) if s != LedgerNode.State.REMOVED]
    if app.desired_state == ChainApp.DesiredState.DELETED:
        status = ChainApp.Status.DELETED if not states else ChainApp.Status.DELETING
    else:
        status = app.derive_status(states, chain_ok=chain_ok)
        none_healthy = LedgerNode.State.RUNNING not in states
        if failed and none_healthy and app.desired_state == ChainApp.DesiredState.RUNNING:
            status = ChainApp.Status.FAILED
    status_reason = (reason or app.status_reason)[:500] if status == ChainApp.Status.FAILED else ""
    ChainApp.objects.filter(pk=app.pk).update(status=status, status_reason=status_reason, updated_at=timezone.now())
    app.status, app.status_reason = status, status_reason
    return status


def stale_operations() -> list[str]:
    """Operations a dead worker left RUNNING, and PENDING ones nobody picked up."""
    running = Operation.objects.filter(status=Operation.Status.RUNNING, heartbeat_at__lt=_stale_before())
    pending = Operation.objects.filter(status=Operation.Status.PENDING, created_at__lt=_stale_before())
    return [str(pk) for pk in running.values_list("pk", flat=True)] + [
        str(pk) for pk in pending.values_list("pk", flat=True)
    ]
