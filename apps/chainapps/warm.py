"""Warm nodes: ledger containers started ahead of any app (docs/provisioning.md, "Warm nodes").

Creating a node on demand costs a network, three ordering-member attachments, a volume, a
container, a secret copy and the node program's start: about three raw `docker run`s on
the request's path (issue 9). A Docker region with ``warm_nodes`` > 0 keeps that many
nodes of each active built-in framework made ahead: network (ordering members attached),
volume, host port and a started container whose node program has loaded its code and
waits for its claim (bsn/ledger/__main__.py, BSN_CLAIM_FILE). Creating an app claims one
per region where one is ready, in the request's transaction (database only): the node
row takes the warm node's name, host port and id, and the warm row goes. The node step
then finds the container by that name and writes the node's secrets and claim into it
(``DockerDriver._ensure_container``) instead of making anything.

A warm node's objects are labelled with its id (``LABEL_WARM``), not an app's or a node's:
labels never change, so the claimed node's spec carries the id and the driver adopts
them by it. Everything else follows the node's recorded name as for any node.

Lifecycle: ``warm_fill`` (the region's worker, after a claim and from the reconcile pass)
makes what is missing and drops what is no longer wanted; the reconcile pass drops a warm
node whose container is not running (``warm_observe``) and never takes one for an orphan.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from dataclasses import replace
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.chainapps.models import Framework, LedgerNode, WarmNode
from apps.chainapps.ports import start_on_own_port
from apps.common.crypto import derive_key
from apps.common.models import installation_id
from apps.regions.models import Region
from apps.runtime.base import PermanentRuntimeError, TransientRuntimeError, WarmNodes, supports
from apps.runtime.drivers import driver_class, driver_for_region
from apps.runtime.spec import NodeSpec, NodeStatus, build_warm_spec, warm_node_name

logger = logging.getLogger(__name__)

# A warm node still "creating" after this long was left by a worker that died mid-way.
CREATING_GRACE = timedelta(minutes=5)
# A ready warm node younger than this is never dropped for not being seen running: the
# pass may have listed the engine before its container started.
READY_GRACE = timedelta(seconds=30)
# Seconds a new warm node may take to listen for its claim before it is ready all the same.
READY_LISTEN_S = 10.0


def warm_frameworks() -> list[Framework]:
    """The frameworks warm nodes are kept for: the active built-in ones."""
    return list(Framework.objects.filter(builtin=True, is_active=True))


def warm_capable(region: Region) -> bool:
    """The region's driver declares warm nodes (``WarmNodes``, apps/runtime/base.py): the
    Docker driver's; a Swarm service or a local process is not claimed in place."""
    return supports(driver_class(region.driver), WarmNodes)


def warm_claim_key(warm_id: str) -> str:
    """The warm node's claim key (bsn/ledger/claim.py), derived again whenever it is needed:
    written into the warm node when it is made, used to seal its claim. (After a SECRET_KEY
    rotation the HTTP claim is refused and the driver copies the claim in instead.)"""
    return base64.urlsafe_b64encode(derive_key(b"bsn warm claim key v1", warm_id)).decode("ascii")


def warm_spec(warm: WarmNode) -> NodeSpec:
    from apps.chainapps.provisioning import runtime_fields

    fields = {**runtime_fields(warm.framework, warm.region), "image": warm.image}  # the image it was made from
    return build_warm_spec(
        installation_id=installation_id(),
        warm_id=str(warm.pk),
        host_port=warm.host_port,
        claim_key=warm_claim_key(str(warm.pk)),
        **fields,
    )


def warm_claim(node: LedgerNode) -> bool:
    """Give the unsaved ``node`` a ready warm node of its region and framework, if there
    is one: it takes the warm node's name, host port and id, and the warm row goes. Call
    inside the transaction that saves the node (rows are locked, skipping those another
    request is claiming). False when none is ready."""
    if not warm_capable(node.region) or node.region.warm_nodes == 0:
        return False
    warm = (
        WarmNode.objects.select_for_update(skip_locked=True)
        .filter(region=node.region, framework=node.framework, image=node.framework.image, state=WarmNode.State.READY)
        .order_by("created_at")
        .first()
    )
    if warm is None:
        return False
    # Where rows cannot be locked (SQLite), a concurrent request may have taken it first:
    # only the request whose delete removed the row has it.
    if WarmNode.objects.filter(pk=warm.pk).delete()[0] == 0:
        return False
    node.name, node.host_port, node.warm = warm.name, warm.host_port, str(warm.pk)
    return True


def warm_fill_later(regions, *, always: bool = False) -> None:
    """After the commit: ask each region's worker to make up for what was claimed (or, with
    ``always``, to follow a changed ``warm_nodes``, down to 0)."""
    from apps.chainapps.tasks import warm_fill_task

    codes = sorted({r.code for r in regions if warm_capable(r) and (r.warm_nodes or always)})

    def send() -> None:
        for region in Region.objects.filter(code__in=codes):
            with contextlib.suppress(Exception):  # the broker is away: the next pass fills
                warm_fill_task.apply_async((region.code,), queue=region.queue, expires=60)

    if codes:
        transaction.on_commit(send)


def warm_fill(region_code: str) -> dict:
    """Make the warm nodes the region is missing and drop those it no longer wants (a lower
    ``warm_nodes``, a framework no longer active or built-in, a region not active)."""
    report = {"region": region_code, "made": 0, "dropped": 0, "errors": []}
    region = Region.objects.filter(code=region_code).first()
    if region is None or not warm_capable(region):
        return report
    driver = driver_for_region(region)
    wanted = {f.pk: f for f in warm_frameworks()} if region.status == Region.Status.ACTIVE else {}
    rows = list(WarmNode.objects.filter(region=region).select_related("framework", "region"))
    for warm in rows:
        if warm.framework_id not in wanted or warm.image != warm.framework.image:  # made from another image
            report["dropped"] += _drop(driver, warm, report)
    rows = list(WarmNode.objects.filter(region=region).select_related("framework", "region"))
    for framework in wanted.values():
        have = [w for w in rows if w.framework_id == framework.pk]
        for warm in have[region.warm_nodes :]:  # newest last: the oldest are claimed first
            report["dropped"] += _drop(driver, warm, report)
        for _ in range(region.warm_nodes - len(have)):
            try:
                _make(driver, region, framework)
                report["made"] += 1
            except (TransientRuntimeError, PermanentRuntimeError) as exc:
                report["errors"].append(str(exc))
                logger.warning("warm node in %s: %s", region.code, exc)
                break  # the engine refuses: the next pass tries again
    return report


def _make(driver, region: Region, framework: Framework) -> WarmNode:
    """One warm node: its row first (its objects are then never orphans), then network,
    volume and container on its own host port, the ordering members attached; ready."""
    from apps.ordering.services import ordering_attach, ordering_ensure

    warm = WarmNode(region=region, framework=framework, image=framework.image)
    warm.name = warm_node_name(installation_id=installation_id(), warm_id=str(warm.pk), region_code=region.code)
    warm.save()
    try:
        ordering_ensure()
        spec = warm_spec(warm)
        status: NodeStatus = start_on_own_port(
            warm, driver, lambda port: driver.ensure_node(replace(spec, host_port=port)), what=f"warm node {warm.name}"
        )
        if status.state != "running":
            raise TransientRuntimeError(f"warm node {warm.name} is {status.state} after its start")
        ordering_attach(spec.network, region=region)
        _wait_ready(driver, warm, status)
    except BaseException:
        _drop(driver, warm, {"errors": []})
        raise
    WarmNode.objects.filter(pk=warm.pk).update(state=WarmNode.State.READY)
    warm.state = WarmNode.State.READY
    return warm


def _wait_ready(driver, warm: WarmNode, status: NodeStatus) -> None:
    """Until the driver says the warm node is ready to be claimed the fast way (``warm_ready``:
    for Docker, its node program listens for its claim). Bounded: past READY_LISTEN_S it is
    ready all the same (the claim still gets there, the slow way), and says so."""
    deadline = time.monotonic() + READY_LISTEN_S
    while time.monotonic() < deadline:
        if driver.warm_ready(status):
            return
        time.sleep(0.02)
    logger.warning("warm node %s is not ready at %s yet; its claim will take the slow way", warm.name, status.endpoint)


def _drop(driver, warm: WarmNode, report: dict) -> int:
    """Remove a warm node's objects, then its row, unless a request claimed it meanwhile
    (then it is that node's). 1 if dropped."""
    from apps.ordering.services import ordering_detach

    with transaction.atomic():
        row = WarmNode.objects.select_for_update(skip_locked=True).filter(pk=warm.pk).first()
        if row is None:
            return 0  # claimed (or being claimed): it is a node's now
        spec = warm_spec(warm)
        try:
            driver.remove_node(spec, keep_data=False)
            ordering_detach(spec.network)
            driver.remove_network(spec)
        except (TransientRuntimeError, PermanentRuntimeError) as exc:
            report["errors"].append(f"dropping {warm.name}: {exc}")
            return 0
        row.delete()
    return 1


def warm_observe(region: Region, observed: dict, driver, *, repair: bool) -> dict:
    """For the reconcile pass: take the region's warm nodes out of ``observed`` (they are
    no orphans), and drop those whose container is not running (a ready one) or that a
    dead worker left half-made; ``{"warm": ready and running, "warm_dropped": n}``."""
    report = {"warm": 0, "warm_dropped": 0}
    now = timezone.now()
    for warm in WarmNode.objects.filter(region=region).select_related("framework", "region"):
        seen = observed.pop(warm.name, None)
        running = seen is not None and seen.state == "running"
        if warm.state == WarmNode.State.READY and running:
            report["warm"] += 1
            continue
        grace = READY_GRACE if warm.state == WarmNode.State.READY else CREATING_GRACE
        stale = now - warm.created_at > grace
        if repair and stale:
            report["warm_dropped"] += _drop(driver, warm, {"errors": []})
    return report
