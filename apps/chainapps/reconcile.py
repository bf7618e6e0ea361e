"""Level-based reconciler for one region: observe, compare with the database, correct.

Status can always be rebuilt from observation. A region whose engine does not answer
becomes ``unavailable`` and its nodes ``unknown`` (never ``deleted``).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.chainapps.node_auth import node_auth
from apps.chainapps.provisioning import (
    app_refresh_status,
    apps_refresh_status,
    node_ensure_running,
    node_remove,
    node_spec,
    node_start_recorded,
    node_wait_verified,
)
from apps.chainapps.warm import warm_capable, warm_fill_later, warm_frameworks, warm_observe
from apps.common.incidents import incident, runtime_reason
from apps.common.leases import single_flight
from apps.common.models import installation_id
from apps.regions.models import Region
from apps.runtime.base import Networks, PermanentRuntimeError, TransientRuntimeError, supports
from apps.runtime.drivers import driver_for_region, engine_key
from apps.runtime.health import REQUEST_TIMEOUT, health_and_chain
from apps.runtime.nodeapi import read_chain
from apps.runtime.spec import LABEL_ROLE, LABEL_WARM, NodeSpec, network_name, volume_name

logger = logging.getLogger(__name__)

ORPHAN_GRACE_SECONDS = 300
REFRESH_PROBE_TIMEOUT = 3.0  # a node busy with a failover may answer /health slowly


def _orphan_spec(name: str, labels: dict[str, str]) -> NodeSpec:
    # A warm node's leftovers name no node: the driver knows them by their warm id.
    return NodeSpec(
        warm=labels.get(LABEL_WARM, ""),
        name=name,
        image="",
        command=None,
        env={},
        labels=labels,
        port=0,
        publish_host="",
        network=network_name(name),
        volume=volume_name(name),
    )


def _orphan_is_mine(name: str, region: Region) -> bool:
    """Exactly one region's reconciler acts on an orphan, also when several regions share
    one engine (each sees it): the region its name was made for
    (apps.runtime.spec.node_name ends with the region code), or, when no region of that
    code is on this engine any more, the first of the engine's regions by code. Two
    reconcilers removing one container raced to "removal already in progress" (409) and
    left its network and volume behind."""
    mine = engine_key(region)
    same_engine = sorted(r.code for r in Region.objects.filter(driver=region.driver) if engine_key(r) == mine)
    parts = name.split("-", 3)
    made_for = parts[3] if len(parts) == 4 and parts[0] == "bsn" else ""
    if made_for in same_engine:
        return made_for == region.code
    return bool(same_engine) and same_engine[0] == region.code


def _orphan_due(name: str) -> bool:
    """True once an orphan has been seen for longer than the grace period."""
    key = f"bsn:orphan:{name}"
    first = cache.get(key)
    now = time.time()
    if first is None:
        cache.set(key, now, timeout=ORPHAN_GRACE_SECONDS * 10)
        return False
    return now - first >= ORPHAN_GRACE_SECONDS


def chain_verdict(*, ordering: str, chains: list[dict | None], max_lag: int) -> tuple[bool, str]:
    """Do the running nodes of one app agree? ``(ok, why not)`` from their ``/chain``.

    Agreement: every node answered; for etcd apps some node names a proposer; no node is
    more than ``max_lag`` blocks behind the highest; nodes at the same height have the
    same head hash (a different hash at one height is a fork).
    """
    if not chains:
        return True, ""
    if any(c is None for c in chains):
        return False, "a running node does not answer /chain"
    if ordering == ChainApp.Ordering.ETCD and not any(c.get("proposer") for c in chains):
        return False, "no proposer elected"
    heights = [int(c.get("height") or 0) for c in chains]
    top = max(heights)
    if any(top - h > max_lag for h in heights):
        return False, f"a node is behind (heights {sorted(heights)})"
    heads: dict[int, str] = {}
    for chain, height in zip(chains, heights, strict=True):
        if heads.setdefault(height, chain.get("head_hash") or "") != (chain.get("head_hash") or ""):
            return False, f"nodes disagree on the block at height {height}"
    return True, ""


def _in_parallel(fn, items: list) -> list:
    """``[fn(item) for item in items]``, at most BSN_RECONCILE_CONCURRENCY at a time (node
    calls: the pass waits on the network, not on this process)."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(settings.BSN_RECONCILE_CONCURRENCY, len(items))) as pool:
        return list(pool.map(fn, items))


def _read_chain_of(node: LedgerNode) -> dict | None:
    auth = node_auth(node)
    return read_chain(node.endpoint, auth=auth) if auth is not None else None


def _write_grouped(observations: list[tuple[LedgerNode, dict]]) -> int:
    """Store what the pass observed of nodes (``[(node, {field: value})]``) in few UPDATEs;
    returns how many. A value the node's row already holds (as loaded in this pass) is not
    written again, and nodes left with the same values are written together: a steady
    region (every node running where it ran, seen now) is one statement, where it was one
    per node (issue 9: 200 nodes, 1,000 statements a pass). Django's ``bulk_update``
    builds a CASE per row and cost more than it saved.

    Each UPDATE applies only to rows whose state is still the one the pass loaded: a step
    that recorded its node meanwhile (verified ``running`` while the pass saw it booting)
    was there later and knows better; the next pass looks again."""
    groups: dict[tuple, list] = {}
    for node, fields in observations:
        news = tuple(sorted((name, value) for name, value in fields.items() if getattr(node, name) != value))
        if news:
            groups.setdefault((node.state, news), []).append(node.pk)
    for (loaded_state, news), pks in groups.items():
        LedgerNode.objects.filter(pk__in=pks, state=loaded_state).update(**dict(news))
    return len(groups)


def _observe_chains(apps: list[ChainApp], *, read: dict | None = None) -> dict:
    """Read /chain of the apps' running nodes (every region), record it, judge each app's
    agreement: ``{app pk: ok}``. One query for the nodes of all the apps, the reads in
    parallel (bounded), their facts written grouped (``_write_grouped``). ``read``: ``{node pk: chain}``
    already read in this pass (right after the node's health probe, on its connection)."""
    if not apps:
        return {}
    read = read or {}
    nodes = list(
        LedgerNode.objects.filter(app_id__in=[app.pk for app in apps], state=LedgerNode.State.RUNNING)
        .exclude(endpoint="")
        .order_by("app_id", "pk")
    )
    unread = [node for node in nodes if node.pk not in read]
    fresh = dict(zip([node.pk for node in unread], _in_parallel(_read_chain_of, unread), strict=True))
    chains = [read[node.pk] if node.pk in read else fresh[node.pk] for node in nodes]
    now = timezone.now()
    by_app: dict = {}
    answered = []
    for node, chain in zip(nodes, chains, strict=True):
        by_app.setdefault(node.app_id, []).append(chain)
        if chain is not None:
            facts = {
                "chain_height": int(chain.get("height") or 0),
                "chain_head": str(chain.get("head_hash") or "")[:64],
                "chain_proposer": str(chain.get("proposer") or "")[:64],
                "chain_seen_at": now,
            }
            answered.append((node, facts))
    _write_grouped(answered)
    verdicts = {}
    for app in apps:
        if app.pk not in by_app:
            verdicts[app.pk] = True  # nothing running: the node states alone decide
            continue
        ok, why = chain_verdict(ordering=app.ordering, chains=by_app[app.pk], max_lag=settings.BSN_CHAIN_MAX_LAG)
        if not ok:
            logger.info("app %s degraded: %s", app.pk, why)
        verdicts[app.pk] = ok
    return verdicts


def _node_for_repair(node_id: str) -> LedgerNode | None:
    return (
        LedgerNode.objects.select_related("app__framework", "app__tenant", "region", "framework")
        .exclude(state=LedgerNode.State.REMOVED)
        .filter(pk=node_id)
        .first()
    )


def _unless_removed(node: LedgerNode):
    """The node's row, unless a delete or scale step marked it removed meanwhile: an
    observation made before that must not bring it back (the app would read `deleting`
    for ever)."""
    return LedgerNode.objects.filter(pk=node.pk).exclude(state=LedgerNode.State.REMOVED)


def reconcile_node(node_id: str) -> str:
    """Observe one node again (its endpoint, whether it proves who it is) and record it;
    repairs (restarting what stopped) are the region pass's business. Runs in the region's
    worker when the gateway found the node silent or unable to prove its identity."""
    node = _node_for_repair(node_id)
    if node is None:
        return "gone"
    try:
        seen = driver_for_region(node.region).observe(node_spec(node, configured=False))
    except TransientRuntimeError as exc:
        # Tenants read the node's last error: a reason and a reference, the detail in the log.
        message = incident(f"observing the node: {runtime_reason(exc)}", f"{node.name}: {exc}").message
        _unless_removed(node).update(state=LedgerNode.State.UNKNOWN, last_error=message)
        return LedgerNode.State.UNKNOWN
    if seen.state == "unknown":  # e.g. the engine is restarting it (restart policy): look later
        return node.state
    fields: dict = {"state": LedgerNode.State.MISSING if seen.state == "missing" else LedgerNode.State.STOPPED}
    if seen.state == "running":
        auth = node_auth(node)
        healthy, chain = (
            health_and_chain(
                seen.endpoint, node.current_framework.health_path, auth=auth, timeout=REFRESH_PROBE_TIMEOUT, chain=True
            )
            if seen.endpoint and auth is not None
            else (False, None)
        )
        fields = {
            "state": LedgerNode.State.RUNNING if healthy else LedgerNode.State.UNHEALTHY,
            "endpoint": seen.endpoint or "",
            "runtime_id": seen.runtime_id or "",
            "last_seen_at": timezone.now(),
        }
        if chain is not None:  # the facts the API shows: height, head and proposer, read together
            fields.update(
                chain_height=int(chain.get("height") or 0),
                chain_head=str(chain.get("head_hash") or "")[:64],
                chain_proposer=str(chain.get("proposer") or "")[:64],
                chain_seen_at=timezone.now(),
            )
    if not _unless_removed(node).update(**fields):
        return "gone"  # removed while we looked (a delete or scale step): it stays removed
    app_refresh_status(node.app)
    return fields["state"]


HEAL_LOCK_SECONDS = 120  # at most this long one worker owns a node's restart or heal


def _repair_lock(node_id: str) -> str:
    """The cache key one worker holds while it restarts or heals the node."""
    return f"bsn:heal:{node_id}"


def _bring_up(node: LedgerNode, *, stop_first: bool) -> str:
    """(Stop and) start the node, then wait until it answers as itself, as after
    provisioning; record what happened. Returns "restarted"/"healed" or "failed: ..."."""
    driver = driver_for_region(node.region)
    try:
        if stop_first:
            driver.stop_node(node_spec(node, configured=False))
        node_wait_verified(node, node_start_recorded(driver, node))
    except (TransientRuntimeError, PermanentRuntimeError) as exc:
        what = "restarting" if stop_first else "restoring"
        message = incident(f"{what} the node: {runtime_reason(exc)}", f"{node.name}: {exc}").message
        LedgerNode.objects.filter(pk=node.pk).update(last_error=message)
        return f"failed: {message}"
    app_refresh_status(node.app)
    return "restarted" if stop_first else "healed"


def node_restart(node_id: str) -> str:
    """Stop the node and start it again (an operator's "restart" in the admin); runs in
    the region's worker. Holds the node's repair lock, so the engine event its stop
    causes does not start a heal of it meanwhile."""
    node = _node_for_repair(node_id)
    if node is None:
        return "gone"
    if node.app.desired_state != ChainApp.DesiredState.RUNNING:
        return f"not restarted: the app is {node.app.desired_state}"
    key = _repair_lock(node_id)
    owned = cache.add(key, "restart", timeout=HEAL_LOCK_SECONDS)
    try:
        return _bring_up(node, stop_first=True)
    finally:
        if owned:
            cache.delete(key)


def node_heal(node_id: str) -> str:
    """Start again, at once, a node that died or was removed behind the platform's back
    (the region's engine reported it: apps.chainapps.healing); the periodic pass stays
    the backstop. Nothing happens when the app is not meant to run, an operation of the
    app is open (it drives the nodes), the node runs already, or another worker is on it."""
    node = _node_for_repair(node_id)
    if node is None:
        return "gone"
    if node.app.desired_state != ChainApp.DesiredState.RUNNING:
        return f"skipped: the app is {node.app.desired_state}"
    if Operation.objects.open().filter(app_id=node.app_id).exists():
        return "skipped: an operation of the app is open"
    key = _repair_lock(node_id)
    if not cache.add(key, "heal", timeout=HEAL_LOCK_SECONDS):
        return "skipped: another worker is on it"
    try:
        seen = driver_for_region(node.region).observe(node_spec(node, configured=False))
        if seen.state == "running":
            return "skipped: it runs"  # e.g. the engine's restart policy brought it back
        return _bring_up(node, stop_first=False)
    except (TransientRuntimeError, PermanentRuntimeError) as exc:
        return f"failed: {exc}"
    finally:
        cache.delete(key)


def _repair_due(app: ChainApp, *, running: bool) -> bool:
    """Whether the pass has something to do to a node of ``app`` (start, stop, remove it,
    or mark it removed), given whether its container runs."""
    wants = app.desired_state
    return (
        (wants == ChainApp.DesiredState.RUNNING and not running)
        or (wants == ChainApp.DesiredState.STOPPED and running)
        or wants == ChainApp.DesiredState.DELETED
    )


def reconcile_region(region_code: str, *, repair: bool = True, wait: float = 30.0) -> dict:
    """One pass over the region. One repairing pass a region at a time (a lease on its row,
    whichever worker or command runs it): two passes that overlapped both restarted the same
    node, which left a one-node app without a healthy node for a moment. A pass that still
    finds another running after ``wait`` seconds says so (``skipped``) and does nothing (the
    periodic task waits 0 s: the next tick comes anyway). A dry run takes no lease."""
    region = Region.objects.filter(code=region_code).first()
    if region is None:
        return {"region": region_code, "error": "unknown region"}
    if not repair:
        return _reconcile_region(region, repair=False)
    lease = settings.BSN_RECONCILE_LEASE
    with single_flight(Region, region.pk, "reconcile_lease_until", lease, wait=wait) as mine:
        if not mine:
            return {"region": region_code, "skipped": "another reconcile pass over this region is running"}
        return _reconcile_region(region, repair=True)


def _reconcile_region(region: Region, *, repair: bool) -> dict:
    region_code = region.code
    driver = driver_for_region(region)
    report = {"region": region_code, "observed": 0, "restarted": 0, "stopped": 0, "removed": 0, "orphans": 0}
    try:
        observed = {status.name: status for status in driver.list_nodes(installation_id=installation_id())}
    except TransientRuntimeError as exc:
        Region.objects.filter(pk=region.pk, status=Region.Status.ACTIVE).update(status=Region.Status.UNAVAILABLE)
        Region.objects.filter(pk=region.pk).update(last_error=str(exc)[:2000])
        nodes = LedgerNode.objects.filter(region=region).exclude(state=LedgerNode.State.REMOVED)
        app_ids = set(nodes.values_list("app_id", flat=True))
        nodes.update(state=LedgerNode.State.UNKNOWN)
        # Their apps' status follows at once (degraded, never failed: derive_status), or an
        # app whose only node is out of sight would still say "running". An app with an open
        # operation is left to it, as in the pass below.
        busy_apps = set(Operation.objects.open().values_list("app_id", flat=True))
        for app in ChainApp.objects.filter(pk__in=app_ids - busy_apps):
            app_refresh_status(app)
        report["error"] = str(exc)
        return report
    Region.objects.filter(pk=region.pk, status=Region.Status.UNAVAILABLE).update(status=Region.Status.ACTIVE)
    Region.objects.filter(pk=region.pk).update(last_seen_at=timezone.now(), last_error="")
    report["observed"] = len(observed)

    busy_apps = set(Operation.objects.open().values_list("app_id", flat=True))
    touched: set = set()
    nodes = list(
        LedgerNode.objects.filter(region=region)
        .exclude(state=LedgerNode.State.REMOVED)
        .select_related("app__framework", "app__tenant", "region", "framework")
    )

    chains: dict = {}  # node pk -> its chain facts, from its /health (or /chain)

    def healthy(node: LedgerNode) -> bool | None:
        """None: not running; else whether what answers proves it is this node (an
        impostor on its port is not). The chain facts of a healthy node of an app whose
        chains this pass judges come with its /health (``health.chain_facts``): one call a node."""
        seen = observed.get(node.name)
        if seen is None or seen.state != "running":
            return None
        auth = node_auth(node)
        if not seen.endpoint or auth is None:
            return False
        judged = node.app.desired_state == ChainApp.DesiredState.RUNNING and node.app_id not in busy_apps
        ok, chain = health_and_chain(
            seen.endpoint, node.current_framework.health_path, auth=auth, timeout=REQUEST_TIMEOUT, chain=judged
        )
        if ok and judged:
            chains[node.pk] = chain
        return ok

    probed = _in_parallel(healthy, nodes)
    now = timezone.now()
    observed_only: list[tuple[LedgerNode, dict]] = []  # written together after the loop
    for node, healthy_now in zip(nodes, probed, strict=True):
        app = node.app
        seen = observed.pop(node.name, None)
        running = seen is not None and seen.state == "running"
        state = LedgerNode.State.MISSING if seen is None else LedgerNode.State.STOPPED
        if running:
            state = LedgerNode.State.RUNNING if healthy_now else LedgerNode.State.UNHEALTHY
        fields = {"state": state}
        if running:
            fields.update(last_seen_at=now, endpoint=seen.endpoint or "", runtime_id=seen.runtime_id or "")
        acted = repair and app.pk not in busy_apps and _repair_due(app, running=running)
        if acted:
            try:
                if app.desired_state == ChainApp.DesiredState.RUNNING and not running:
                    status = node_ensure_running(driver, node)
                    fields.update(
                        endpoint=status.endpoint or "",
                        runtime_id=status.runtime_id or "",
                        state=LedgerNode.State.UNHEALTHY,
                    )
                    report["restarted"] += 1
                elif app.desired_state == ChainApp.DesiredState.STOPPED and running:
                    driver.stop_node(node_spec(node, configured=False))  # no keys needed to stop
                    fields["state"] = LedgerNode.State.STOPPED
                    report["stopped"] += 1
                elif app.desired_state == ChainApp.DesiredState.DELETED and seen is not None:
                    node_remove(driver, node, node_spec(node, configured=False), keep_data=True)
                    fields["state"] = LedgerNode.State.REMOVED
                    report["removed"] += 1
                elif app.desired_state == ChainApp.DesiredState.DELETED:
                    fields["state"] = LedgerNode.State.REMOVED
            except (TransientRuntimeError, PermanentRuntimeError) as exc:
                # Tenants see the node's last error: a reason and a reference, the detail in the log.
                fields["last_error"] = incident(
                    f"repairing the node: {runtime_reason(exc)}", f"{node.name}: {exc}"
                ).message
        if acted:  # what a repair did is recorded at once, as it happens
            LedgerNode.objects.filter(pk=node.pk).update(**fields)
        else:
            observed_only.append((node, fields))
        touched.add(app.pk)
    _write_grouped(observed_only)

    # Warm nodes are the pool's, never orphans; a ready one that stopped running goes.
    report.update(warm_observe(region, observed, driver, repair=repair))
    if repair and warm_capable(region) and region.warm_nodes and region.status == Region.Status.ACTIVE:
        if report["warm"] < region.warm_nodes * len(warm_frameworks()):
            warm_fill_later([region])

    # Several regions may share one engine (one host, or tests): a container another region's
    # row knows is that region's business, not an orphan.
    known_elsewhere = set(
        LedgerNode.objects.filter(name__in=list(observed))
        .exclude(state=LedgerNode.State.REMOVED)
        .values_list("name", flat=True)
    )
    # A node the database knows as removed (its app deleted with its data kept) keeps its
    # data volume if its container shows up again; the leftovers of a create that never
    # reached the database (no row at all) go entirely: container, network and volume.
    kept = set(LedgerNode.objects.filter(name__in=list(observed)).values_list("name", flat=True))
    for name, status in observed.items():  # labelled by us, unknown to the database
        if status.labels.get(LABEL_ROLE, "ledger") != "ledger" or name in known_elsewhere:
            continue  # ordering members are apps.ordering's to heal, never app orphans
        if not _orphan_is_mine(name, region):
            continue  # another region's reconciler on this engine acts on it
        report["orphans"] += 1
        if repair and _orphan_due(name):
            spec = _orphan_spec(name, status.labels)
            try:
                driver.remove_node(spec, keep_data=name in kept)
                if supports(driver, Networks):  # ordering members join app networks
                    from apps.ordering.services import ordering_detach

                    ordering_detach(spec.network)
                driver.remove_network(spec)
                report["removed"] += 1
            except (TransientRuntimeError, PermanentRuntimeError) as exc:
                logger.warning("reconcile orphan %s: %s", name, exc)

    apps = list(ChainApp.objects.filter(pk__in=touched).exclude(pk__in=busy_apps))
    chain_ok = _observe_chains([app for app in apps if app.desired_state == ChainApp.DesiredState.RUNNING], read=chains)
    apps_refresh_status(apps, chain_ok=chain_ok)
    return report
