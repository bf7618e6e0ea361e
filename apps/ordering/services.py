"""Writes for the ordering service: create/adopt/heal the etcd members, per-app credentials.

All functions are idempotent and safe to run concurrently from several workers: rows are
claimed with ``select_for_update``, containers are created or adopted by deterministic
name and labels, etcd users/roles are added-or-kept. Failures are classified like the
runtime drivers': ``TransientRuntimeError`` (retry with backoff) or
``PermanentRuntimeError`` (a person must act).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode
from apps.chainapps.ports import engine_busy_ports, host_port, start_on_own_port
from apps.common.crypto import decrypt_secret, encrypt_secret
from apps.common.leases import single_flight
from apps.common.models import installation_id
from apps.common.scope import forget, scoped
from apps.ordering import peer_tls
from apps.ordering import spec as ospec
from apps.ordering.models import MEMBER_COUNT, AppOrderingCredential, OrderingCluster, OrderingMember
from apps.regions.models import Region
from apps.runtime.base import (
    HostUnavailable,
    Networks,
    PermanentRuntimeError,
    PlatformServices,
    RuntimeError_,
    RuntimeUnavailable,
    TransientRuntimeError,
    supports,
)
from apps.runtime.drivers import driver_for_region, engine_key, same_engine
from apps.runtime.spec import LABEL_GENERATION, LABEL_WARM, NodeSpec
from bsn.ledger.etcd_http import EtcdAuthError, EtcdClient, EtcdError, EtcdUnavailable, prefix_end, wait_ready

logger = logging.getLogger(__name__)

ENSURE_TIMEOUT = 60.0  # seconds for a new cluster to elect a leader

# Seconds a member started by ``ordering_ensure`` may take to know the leader once the
# others have a quorum, before its health is recorded (it is "degraded" until then).
STARTED_GRACE = 10.0
READMIT_TIMEOUT = 15.0  # seconds to wait for etcd to accept re-adding a lost member
UPGRADE_TIMEOUT = 20.0  # seconds for a recreated member to rejoin before the next one goes
ROOT_USER = "root"
ETCD_TIMEOUT = 3.0
# A token handed to nodes with their claim is this young at most: etcd forgets one unused
# for --auth-token-ttl (300 s); a node whose token is gone authenticates with its password.
APP_TOKEN_FRESH_S = 30.0
SPARE_TRIES = 3  # spares a take tries before making a user (others may take the same ones)


def ensure_fresh() -> float:
    """Seconds a full check (``ordering_ensure``'s, or the reconciler's ``ordering_heal``, every
    BSN_RECONCILE_INTERVAL) that found every member healthy stands while each member still
    answers (``_recently_healthy``): a provisioning step then costs three status calls
    instead of the cluster lock, six engine calls and the bookkeeping (about 60 ms each,
    serialised between the parallel steps of a multi-region app). Two heal intervals, so
    that between heals every create takes the fast path (it was 5 s: most creates took the
    slow one); at least 5 s where heals run often."""
    return max(5.0, 2 * settings.BSN_RECONCILE_INTERVAL)


class OrderingNotReady(TransientRuntimeError):
    """The ordering service cannot serve yet (no quorum, member starting); retry later."""


class OrderingMisconfigured(PermanentRuntimeError):
    """Retrying will not help: no Docker region, wrong root password, …"""


# --------------------------------------------------------------------------- helpers


def ordering_regions() -> list[Region]:
    """The regions the members may be placed on, by code: those ``BSN_ORDERING_REGIONS``
    names; by default the Docker regions (active ones first), else one Swarm region, whose
    hosts the Swarm driver spreads the members over. Regions on a swarm hold all three
    members or none: members on one swarm peer over its encrypted overlay network by name,
    and a cluster spanning a swarm and other engines (peer TLS on published ports) is not
    built."""
    named = list(settings.BSN_ORDERING_REGIONS)
    if named:
        regions = list(Region.objects.filter(code__in=named).order_by("code"))
        missing = sorted(set(named) - {r.code for r in regions})
        if missing:
            raise OrderingMisconfigured(f"BSN_ORDERING_REGIONS names unknown region(s): {', '.join(missing)}")
        refused = [r.code for r in regions if not supports(driver_for_region(r), PlatformServices)]
        if refused:
            raise OrderingMisconfigured(
                f"region(s) {', '.join(refused)} cannot run the ordering members (driver without platform services)"
            )
        swarms = {engine_key(r) for r in regions if r.driver == Region.Driver.SWARM}
        if swarms and len({engine_key(r) for r in regions}) > 1:
            raise OrderingMisconfigured(
                "BSN_ORDERING_REGIONS mixes a swarm with other engines: name regions of one swarm (its hosts "
                "spread the members) or Docker regions only"
            )
        return regions
    docker = _active_first(Region.Driver.DOCKER)
    return docker or _active_first(Region.Driver.SWARM)[:1]


def _active_first(driver: str) -> list[Region]:
    """The regions of ``driver`` by code: the active ones, or all when none is active."""
    regions = list(Region.objects.filter(driver=driver).order_by("code"))
    return [r for r in regions if r.status == Region.Status.ACTIVE] or regions


def _cluster_row() -> OrderingCluster:
    """The singleton, created with its secrets on first use (caller holds a transaction)."""
    cluster = OrderingCluster.objects.select_for_update().filter(pk=1).first()
    if cluster is None:
        OrderingCluster.objects.get_or_create(
            pk=1,
            defaults={
                "token": f"bsn-{installation_id()[:8]}-{secrets.token_hex(8)}",
                "root_password_encrypted": encrypt_secret(secrets.token_urlsafe(24)),
            },
        )
        cluster = OrderingCluster.objects.select_for_update().get(pk=1)
    return cluster


def member_placement(regions: list[Region], count: int = MEMBER_COUNT) -> list[Region]:
    """The region of each member: over distinct engines first, so that losing one engine
    loses as few members as possible (with three engines, one each), then over the other
    regions of each engine. ``regions`` in a stable order (by code)."""
    by_engine: dict[str, list[Region]] = {}
    for region in regions:
        by_engine.setdefault(engine_key(region), []).append(region)
    engines = list(by_engine.values())
    placement = []
    for i in range(count):
        regions_of_engine = engines[i % len(engines)]  # the next engine, round-robin
        placement.append(regions_of_engine[(i // len(engines)) % len(regions_of_engine)])
    return placement


def _member_rows() -> list[OrderingMember]:
    """One row per member index, placed by member_placement (members stay where they were
    first placed: moving one is a new member, which heal does for a lost one)."""
    existing = {m.index: m for m in OrderingMember.objects.select_related("region")}
    if len(existing) < MEMBER_COUNT:
        regions = ordering_regions()
        if not regions:
            raise OrderingMisconfigured("the ordering service needs a region with the docker or swarm driver")
        placement = member_placement(regions)
        inst = installation_id()
        for index in range(MEMBER_COUNT):
            if index not in existing:
                existing[index], _ = OrderingMember.objects.get_or_create(
                    index=index, defaults={"region": placement[index], "name": ospec.member_name(inst, index)}
                )
    return [existing[i] for i in range(MEMBER_COUNT)]


def _on_networks(member: OrderingMember) -> bool:
    """Does the member join app networks (Docker), so that nodes on its engine reach it by
    name? Members on a swarm do not: a service joins a network only by an update, which
    would restart it for every new app, so nodes reach them at their published ports."""
    return supports(driver_for_region(member.region), Networks)


def spans_engines(members: list[OrderingMember]) -> bool:
    """Are the members on more than one engine (then they peer through published ports)?"""
    return len({engine_key(m.region) for m in members}) > 1


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def peer_urls(members: list[OrderingMember], cluster: OrderingCluster) -> tuple[dict[str, str], bool]:
    """``({member name: peer URL}, published)`` for all members. On one engine, the
    ordering network's names (``ospec.peer_url``). Spread over engines, each member's peer
    port published on its region's host address (allocated once like its client port, and
    kept), with peer TLS (``_peer_tls_ready``); a loopback address cannot be reached from
    another engine's containers, so such a placement is refused with the reason."""
    network = ospec.ordering_network_name(installation_id())
    if not spans_engines(members):
        return {m.name: ospec.peer_url(m.name, network) for m in members}, False
    loopback = sorted({m.region.code for m in members if _loopback(m.region.publish_host)})
    if loopback:
        raise OrderingMisconfigured(
            f"the ordering members are spread over several engines, but region(s) {', '.join(loopback)} publish "
            "on a loopback address, which containers on the other engines cannot reach: set the region's "
            "publish_host to an address of that engine's host that the other engines reach"
        )
    for member in members:
        if not member.peer_host_port:
            busy = engine_busy_ports(driver_for_region(member.region))
            host_port(member, from_top=True, busy=busy, field="peer_host_port")
    _peer_tls_ready(members, cluster)
    return {m.name: ospec.published_peer_url(m.region.publish_host, m.peer_host_port) for m in members}, True


def _peer_tls_ready(members: list[OrderingMember], cluster: OrderingCluster) -> None:
    """The cluster's peer CA and each member's certificate for its current publish
    address exist (made once; a member whose address changed gets a new one). Conditional
    updates, so concurrent callers agree on one CA."""
    if not cluster.peer_ca_cert:
        cert, key = peer_tls.new_ca(installation_id()[:8])
        OrderingCluster.objects.filter(pk=cluster.pk, peer_ca_cert="").update(
            peer_ca_cert=cert, peer_ca_key_encrypted=encrypt_secret(key)
        )
        fresh = OrderingCluster.objects.get(pk=cluster.pk)
        cluster.peer_ca_cert, cluster.peer_ca_key_encrypted = fresh.peer_ca_cert, fresh.peer_ca_key_encrypted
    for member in members:
        host = member.region.publish_host
        if peer_tls.certificate_names(member.peer_cert, cluster.peer_ca_cert, host):
            continue
        cert, key = peer_tls.member_certificate(
            cluster.peer_ca_cert, decrypt_secret(cluster.peer_ca_key_encrypted), member.name, host
        )
        OrderingMember.objects.filter(pk=member.pk, peer_cert=member.peer_cert).update(
            peer_cert=cert, peer_key_encrypted=encrypt_secret(key)
        )
        fresh = OrderingMember.objects.get(pk=member.pk)
        member.peer_cert, member.peer_key_encrypted = fresh.peer_cert, fresh.peer_key_encrypted


def member_spec(
    member: OrderingMember,
    cluster: OrderingCluster,
    names: list[str],
    *,
    cluster_state: str = "new",
    urls: tuple[dict[str, str], bool] | None = None,
) -> NodeSpec:
    """``urls``: what ``peer_urls`` gives; None where only the container's state is looked
    at (the command does not matter there)."""
    by_name, published = urls if urls is not None else (None, False)
    tls = (
        {
            ospec.PEER_CA: cluster.peer_ca_cert,
            ospec.PEER_CERT: member.peer_cert,
            ospec.PEER_KEY: decrypt_secret(member.peer_key_encrypted),
        }
        if published
        else None
    )
    return ospec.build_member_spec(
        installation_id=installation_id(),
        index=member.index,
        members=names,
        token=cluster.token,
        image=settings.BSN_LEDGER_IMAGE,
        publish_host=member.region.publish_host,
        cluster_state=cluster_state,
        host_port=member.host_port,
        peer_urls=by_name,
        peer_host_port=member.peer_host_port if published else None,
        peer_tls=tls,
    )


def _endpoints(members: list[OrderingMember]) -> list[str]:
    return [m.endpoint for m in members if m.endpoint]


def _members_now() -> list[OrderingMember]:
    """The members by index, with their regions: read once per ``work_scope()`` (a node
    step asks three times: the service's fast check, its etcd endpoints, the members to
    attach). Not to be changed by the caller; a pass that changes members ``forget``s it."""
    return scoped("ordering.members", lambda: list(OrderingMember.objects.select_related("region").order_by("index")))


def _cluster_now() -> OrderingCluster | None:
    """The cluster's row, once per ``work_scope()`` (see ``_members_now``)."""
    return scoped("ordering.cluster", lambda: OrderingCluster.objects.filter(pk=1).first())


def _forget_rows() -> None:
    forget("ordering.members", "ordering.cluster")


def admin_client(*, members: list[OrderingMember] | None = None, cluster: OrderingCluster | None = None) -> EtcdClient:
    """An etcd client as root, on the members' published client URLs."""
    members = members if members is not None else _members_now()
    cluster = cluster or _cluster_now()
    if cluster is not None and members and not any(member_health(m.endpoint) for m in members):
        # A restarted member may be published on a new host port: look at the containers.
        # Specs name every member of the cluster, also when asked about some of them.
        names = [m.name for m in OrderingMember.objects.order_by("index")]
        for member in members:
            try:
                _observe_and_start(member, member_spec(member, cluster, names), start=False)
            except RuntimeError_ as exc:
                logger.warning("ordering: cannot observe %s: %s", member.name, exc)
    endpoints = _endpoints(members)
    if cluster is None or not endpoints:
        raise OrderingNotReady("the ordering service is not provisioned (run `manage.py bsn_ordering ensure`)")
    user = ROOT_USER if cluster.auth_enabled else None
    password = decrypt_secret(cluster.root_password_encrypted) if cluster.auth_enabled else None
    return EtcdClient(endpoints, user=user, password=password, timeout=ETCD_TIMEOUT)


def _etcd_error(exc: EtcdError, what: str) -> RuntimeError_:
    if isinstance(exc, EtcdAuthError):
        return OrderingMisconfigured(f"{what}: etcd refused the root credentials ({exc})")
    return OrderingNotReady(f"{what}: {exc}")


def member_health(endpoint: str, *, timeout: float = 1.0) -> dict[str, Any] | None:
    """The member's /v3/maintenance/status if it answers and knows a leader, else None."""
    if not endpoint:
        return None
    try:
        status = EtcdClient([endpoint], timeout=timeout).status(endpoint, timeout=timeout)
    except (EtcdError, OSError, ValueError):
        return None
    return status if str(status.get("leader") or "0") != "0" else None


def _observe_and_start(member: OrderingMember, spec: NodeSpec, *, start: bool) -> str:
    """Start the member's container if needed; record what was seen. Returns the action taken."""
    driver = driver_for_region(member.region)
    action = "none"
    try:
        status = driver.observe(spec)
        outdated = status.state == "running" and status.labels.get(LABEL_GENERATION) != spec.labels[LABEL_GENERATION]
        if (status.state != "running" or outdated) and start:
            status = driver.ensure_service(spec)  # recreates a member of another generation
            action = "started" if status.state == "running" else "start-failed"
            if outdated and status.state == "running":
                action = "upgraded+started"
                _wait_member_healthy(status.endpoint or "")  # one member at a time keeps the quorum
    except (RuntimeUnavailable, HostUnavailable) as exc:  # its engine or its host is away: the others keep the quorum
        OrderingMember.objects.filter(pk=member.pk).update(state=OrderingMember.State.UNKNOWN, last_error=str(exc))
        return "engine-unavailable" if isinstance(exc, RuntimeUnavailable) else "host-unavailable"
    except RuntimeError_ as exc:
        OrderingMember.objects.filter(pk=member.pk).update(last_error=str(exc)[:2000])
        raise
    fields: dict[str, Any] = {"runtime_id": status.runtime_id or ""}
    if status.state == "running":
        fields.update(endpoint=status.endpoint or "", state=OrderingMember.State.UNHEALTHY)
    else:
        fields["state"] = OrderingMember.State.MISSING if status.state == "missing" else OrderingMember.State.STOPPED
    OrderingMember.objects.filter(pk=member.pk).update(**fields)
    for key, value in fields.items():
        setattr(member, key, value)
    return action


def _wait_member_healthy(endpoint: str, timeout: float = UPGRADE_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if member_health(endpoint):
            return True
        time.sleep(0.2)
    return False


def _record_health(members: list[OrderingMember], cluster: OrderingCluster) -> str:
    now = timezone.now()
    healthy = 0
    for member in members:
        if member.state == OrderingMember.State.UNKNOWN:
            continue
        if member.endpoint and member_health(member.endpoint):
            healthy += 1
            member.state = OrderingMember.State.RUNNING
            OrderingMember.objects.filter(pk=member.pk).update(
                state=member.state, last_seen_at=now, last_error="", endpoint=member.endpoint
            )
        elif member.state == OrderingMember.State.RUNNING:
            member.state = OrderingMember.State.UNHEALTHY
            OrderingMember.objects.filter(pk=member.pk).update(state=member.state)
    if healthy == len(members):
        state = OrderingCluster.State.HEALTHY
    elif healthy > len(members) // 2:
        state = OrderingCluster.State.DEGRADED
    else:
        state = OrderingCluster.State.UNAVAILABLE
    if cluster.state == OrderingCluster.State.PENDING and state == OrderingCluster.State.UNAVAILABLE:
        state = OrderingCluster.State.PENDING
    OrderingCluster.objects.filter(pk=cluster.pk).update(state=state, last_checked_at=now)
    cluster.state = state
    return state


def _setup_auth(cluster: OrderingCluster, members: list[OrderingMember]) -> None:
    """root user + role, then auth on. Safe to repeat after a crash at any point."""
    if cluster.auth_enabled:
        return
    root_password = decrypt_secret(cluster.root_password_encrypted)
    anon = EtcdClient(_endpoints(members), timeout=ETCD_TIMEOUT)
    try:
        if not anon.user_add(ROOT_USER, root_password):
            anon.user_change_password(ROOT_USER, root_password)  # the user may be left from an attempt
        anon.role_add(ROOT_USER)
        anon.user_grant_role(ROOT_USER, ROOT_USER)
        anon.auth_enable()
    except EtcdAuthError:
        pass  # auth is on already (an earlier attempt got that far): check the password below
    except EtcdError as exc:
        raise _etcd_error(exc, "setting up etcd auth") from exc
    root = EtcdClient(_endpoints(members), user=ROOT_USER, password=root_password, timeout=ETCD_TIMEOUT)
    try:
        root.authenticate()
    except EtcdAuthError as exc:
        raise OrderingMisconfigured(
            "etcd auth is enabled with a root password this database does not hold (members' volumes "
            f"from another installation or database?): {exc}"
        ) from exc
    except EtcdError as exc:
        raise _etcd_error(exc, "checking the etcd root user") from exc
    OrderingCluster.objects.filter(pk=cluster.pk).update(auth_enabled=True)
    cluster.auth_enabled = True


def _wait_quorum(members: list[OrderingMember], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live = [m for m in members if member_health(m.endpoint)]
        if len(live) > len(members) // 2:
            try:
                wait_ready(EtcdClient(_endpoints(live), timeout=1.0), max(0.5, deadline - time.monotonic()))
                return
            except EtcdUnavailable:
                pass
        if time.monotonic() >= deadline:
            raise OrderingNotReady(
                f"the ordering service has no quorum after {timeout:.0f}s "
                f"({len(live)}/{len(members)} members answer); see `manage.py bsn_ordering status`"
            )
        time.sleep(0.2)


# --------------------------------------------------------------------------- services


def ordering_ensure(*, timeout: float = ENSURE_TIMEOUT) -> OrderingCluster:
    """Create or adopt the three members, wait for a quorum, set up auth. Idempotent.

    One full pass at a time, and never beside a heal: the pass holds the cluster's heal
    lease (``ordering_heal`` holds the same one), waiting up to ``timeout`` for a running
    heal or another ensure to finish, after which it usually finds the work done (the fast
    path). Members this pass started are given a moment (STARTED_GRACE) to know the leader
    before health is recorded, so a fresh cluster reads healthy rather than degraded.
    """
    recent = _recently_healthy()
    if recent is not None:
        return recent
    with transaction.atomic():
        pk = _cluster_row().pk  # the singleton exists (with its secrets) before it can be leased
    lease = settings.BSN_RECONCILE_LEASE
    with single_flight(OrderingCluster, pk, "heal_lease_until", lease, wait=timeout, poll=0.05) as mine:
        if not mine:
            raise OrderingNotReady(
                f"a heal of the ordering service has held it for over {timeout:.0f}s; "
                "see `manage.py bsn_ordering status`"
            )
        _forget_rows()  # the pass we waited for may have done it all: look again
        recent = _recently_healthy()
        if recent is not None:
            return recent
        try:
            with transaction.atomic():
                cluster = _cluster_row()
                members = _member_rows()
                names = [m.name for m in members]
                _update_peer_urls(members, cluster)
                started = [m for m in members if _start_member(m, cluster, names, members).endswith("started")]
                _wait_quorum(members, timeout)
                _setup_auth(cluster, members)
                _wait_members(started, STARTED_GRACE)
                _record_health(members, cluster)
                OrderingCluster.objects.filter(pk=cluster.pk).update(last_error="")
        finally:
            _forget_rows()  # this pass changed them (or some of them, if it failed)
    return cluster


def _wait_members(members: list[OrderingMember], timeout: float) -> None:
    """Until every one of ``members`` answers with a leader, at most ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    for member in members:
        if member.endpoint:
            _wait_member_healthy(member.endpoint, timeout=max(0.0, deadline - time.monotonic()))


def _recently_healthy() -> OrderingCluster | None:
    """The cluster, when the last full check (``ordering_ensure``, ``ordering_heal``) is
    under ``ensure_fresh()`` seconds old, found it healthy with auth on, and every member still
    answers now; else None (the full, locked path runs). A member killed since does not
    answer, so the full path restarts it as before; a change of a member's spec (an image
    upgrade, new peer URLs) waits at most that long, or for the reconciler's heal."""
    cluster = _cluster_now()
    if (
        cluster is None
        or cluster.state != OrderingCluster.State.HEALTHY
        or not cluster.auth_enabled
        or cluster.last_checked_at is None
        or (timezone.now() - cluster.last_checked_at).total_seconds() > ensure_fresh()
    ):
        return None
    members = _members_now()
    if len(members) != MEMBER_COUNT or any(m.state != OrderingMember.State.RUNNING for m in members):
        return None
    return cluster if _members_answer([m.endpoint for m in members]) else None


_answered: dict[str, Any] = {"finished": float("-inf"), "endpoints": (), "answered": False}
_answered_lock = threading.Lock()


def _members_answer(endpoints: list[str]) -> bool:
    """Does every member answer with a leader now? One check at a time in this process,
    and a caller that asked while one was under way takes its answer (single flight):
    one create's parallel node steps (a worker's threads) ask within milliseconds, and
    nine status calls told no more than three. A check that had ended before the caller
    asked is never reused: the answer was under way at the call, never older (a member
    seen dead before the call is seen dead by it)."""
    asked = time.monotonic()
    key = tuple(endpoints)
    with _answered_lock:
        if _answered["endpoints"] == key and _answered["finished"] >= asked:
            return _answered["answered"]
        with ThreadPoolExecutor(max_workers=MEMBER_COUNT, thread_name_prefix="bsn-member-health") as pool:
            # Side by side: three status calls cost one round trip, not three.
            answered = all(pool.map(member_health, endpoints))
        _answered.update(finished=time.monotonic(), endpoints=key, answered=answered)
        return answered


def ordering_heal(*, wait: float = 30.0) -> dict[str, Any]:
    """For the reconciler: restart dead members (same name + same volume rejoin), re-attach
    them to every app network on their engine, record health. Creates nothing new.

    One heal at a time (a lease on the cluster row, apps/common/leases.py): two that
    overlapped both restarted the same member. One that still finds another running after
    ``wait`` seconds reports ``skipped`` and does nothing (beat's task waits 0 s)."""
    report: dict[str, Any] = {"members": 0, "restarted": [], "attached": 0, "state": None, "errors": []}
    cluster = OrderingCluster.objects.filter(pk=1).first()
    members = list(OrderingMember.objects.select_related("region"))
    if cluster is None or not members:
        report["state"] = "absent"
        return report
    lease = settings.BSN_RECONCILE_LEASE
    with single_flight(OrderingCluster, cluster.pk, "heal_lease_until", lease, wait=wait) as mine:
        if not mine:
            report["members"] = len(members)
            report["skipped"] = "another heal or full check of the ordering service is running"
            return report
        return _heal(cluster, members, report)


def _heal(cluster: OrderingCluster, members: list[OrderingMember], report: dict[str, Any]) -> dict[str, Any]:
    report["members"] = len(members)
    names = [m.name for m in sorted(members, key=lambda m: m.index)]
    report["rejoined"] = []
    report["upgraded"] = []
    report["peer_urls_updated"] = _update_peer_urls(members, cluster)
    for member in members:
        try:
            action = _start_member(member, cluster, names, members)
            if action.startswith("rejoined"):
                report["rejoined"].append(member.name)
            if "upgraded" in action:
                report["upgraded"].append(member.name)
            if action.endswith("started"):
                report["restarted"].append(member.name)
        except RuntimeError_ as exc:
            report["errors"].append(f"{member.name}: {exc}")
    report["attached"] = _attach_all(members, report["errors"])
    report["state"] = _record_health(members, cluster)
    if report["state"] == OrderingCluster.State.HEALTHY and not cluster.auth_enabled:
        try:
            _setup_auth(cluster, members)
        except RuntimeError_ as exc:
            report["errors"].append(str(exc))
    OrderingCluster.objects.filter(pk=cluster.pk).update(last_error="; ".join(report["errors"])[:2000])
    return report


def _start_member(
    member: OrderingMember, cluster: OrderingCluster, names: list[str], members: list[OrderingMember]
) -> str:
    """Start the member if it is not running; one that lost its data rejoins as a new
    member. Returns the action: "none", "started", "rejoined+started", ...

    Members publish their client port on a host port of their own (``ports.host_port``),
    kept across restarts and network changes; one the engine refuses is replaced.
    """
    state, prefix = "new", ""
    urls = peer_urls(members, cluster)
    if _lost_with_its_data(member, member_spec(member, cluster, names), cluster):
        _readmit(member, [m for m in members if m.pk != member.pk], urls[0][member.name])
        state, prefix = "existing", "rejoined+"
    spec = member_spec(member, cluster, names, cluster_state=state, urls=urls)
    return prefix + start_on_own_port(
        member,
        driver_for_region(member.region),
        lambda port: _observe_and_start(member, replace(spec, host_port=port), start=True),
        what=f"ordering member {member.name}",
        from_top=True,
    )


def _update_peer_urls(members: list[OrderingMember], cluster: OrderingCluster) -> list[str]:
    """Point the cluster at each member's ordering-network peer URL; the names updated.

    Members of generation 1 advertised ``http://<name>:2380`` and listened on every
    address; from generation 2 the peer port listens on the ordering network only, and a
    plain container name may resolve to an app-network address. The URLs are changed
    here, while the old members still listen everywhere, before the driver recreates
    them. Best effort: it needs a quorum; the next heal tries again.
    """
    if not cluster.auth_enabled or cluster.state not in (OrderingCluster.State.HEALTHY, OrderingCluster.State.DEGRADED):
        return []
    urls, _ = peer_urls(members, cluster)
    updated = []
    try:
        root = admin_client(members=members, cluster=cluster)
        for entry in root.member_list():
            name = entry.get("name")
            want = [urls[name]] if name in urls else None
            if want and list(entry.get("peerURLs") or []) != want:
                root.member_update(int(entry["ID"]), want)
                logger.warning("ordering member %s: peer URL is now %s", name, want[0])
                updated.append(name)
    except (EtcdError, RuntimeError_) as exc:
        logger.info("ordering: cannot check the members' peer URLs yet: %s", exc)
    return updated


def _lost_with_its_data(member: OrderingMember, spec: NodeSpec, cluster: OrderingCluster) -> bool:
    """The member's container and its volume are both gone from a cluster that exists.

    Restarted as it was, an empty member would try to bootstrap a new cluster and be
    refused by the other two; it must rejoin as a new member instead (``_readmit``).
    """
    if not cluster.auth_enabled:
        return False  # not bootstrapped yet: ordering_ensure creates members as "new"
    driver = driver_for_region(member.region)
    if not supports(driver, PlatformServices) or driver.observe(spec).state != "missing":
        return False
    return not driver.volume_exists(spec.volume)


def _readmit(member: OrderingMember, others: list[OrderingMember], url: str) -> None:
    """Replace the lost member's identity in the cluster: remove the old one, add it again
    at peer URL ``url`` (empty; it copies everything from the leader once it starts).
    Repeatable: a member already removed, or already added and not started yet, is left
    as it is."""
    root = admin_client(members=others)
    try:
        listed = root.member_list()
        for entry in listed:
            if entry.get("name") == member.name:
                root.member_remove(int(entry["ID"]))
                logger.warning("ordering member %s lost its data: removed from the cluster", member.name)
        pending = [e for e in listed if not e.get("name") and url in (e.get("peerURLs") or [])]
        if not pending:
            _member_add(root, url)
            logger.warning("ordering member %s added back; it starts empty and catches up", member.name)
    except EtcdError as exc:
        raise _etcd_error(exc, f"re-admitting ordering member {member.name}") from exc


def _member_add(root: EtcdClient, url: str, *, timeout: float = READMIT_TIMEOUT) -> None:
    """etcd refuses a membership change ("unhealthy cluster") until the members have been
    connected for its health interval (5 s) after the previous change: retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            root.member_add([url])
            return
        except EtcdError as exc:
            if "unhealthy cluster" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def _attach_all(members: list[OrderingMember], errors: list[str]) -> int:
    """Connect every member to every app network on its engine (a recreated container lost them)."""
    attached = 0
    inst = installation_id()
    for member in members:
        if member.state == OrderingMember.State.UNKNOWN:
            continue
        if not _on_networks(member):
            continue  # on a swarm: apps reach members at their published ports
        driver = driver_for_region(member.region)
        try:
            # App networks, and warm nodes' (made for an app to come, or claimed by one).
            networks = driver.owned_networks(installation_id=inst)
            networks += driver.owned_networks(installation_id=inst, label=LABEL_WARM)
            for network in networks:
                attached += bool(driver.connect_to_network(member.name, network, installation_id=inst))
        except RuntimeError_ as exc:
            errors.append(f"attach {member.name}: {exc}")
    return attached


def ordering_attach(network_name: str, *, region: Region | None = None) -> list[str]:
    """Connect every member on the engine that has ``network_name`` to it; the names attached.

    Call right after the app's network exists and before its nodes start, so a node
    reaches etcd by member container name from its first second. ``region``: only
    members on that region's engine (default: every member whose engine has the network).
    A member that is down is skipped here; ``ordering_heal`` attaches it once it is back.
    """
    return ordering_attach_begin(network_name, region=region)()


def ordering_attach_begin(network_name: str, *, region: Region | None = None) -> Callable[[], list[str]]:
    """``ordering_attach`` started, not waited for: the members are read here, the engine
    calls run in threads (no database there), and calling the result waits for them and
    gives the names attached (or raises what a connect raised). Provisioning starts the
    node's container meanwhile: the connects and the container start are independent
    engine calls, and a node retries etcd until its members are attached."""
    inst = installation_id()
    members = [m for m in _members_now() if (region is None or same_engine(m.region, region)) and _on_networks(m)]
    drivers = {m.pk: driver_for_region(m.region) for m in members}

    def attach(member: OrderingMember) -> str | None:
        try:
            drivers[member.pk].connect_to_network(member.name, network_name, installation_id=inst)
        except TransientRuntimeError as exc:
            if "does not exist" in str(exc):
                logger.info("ordering_attach: %s", exc)  # other engine, or the member is down
                return None
            raise
        return member.name

    # The connects are independent engine calls: run them side by side.
    pool = ThreadPoolExecutor(max_workers=max(1, len(members)), thread_name_prefix="bsn-attach")
    futures = [pool.submit(attach, m) for m in members]
    pool.shutdown(wait=False)

    def wait() -> list[str]:
        return [name for name in (f.result() for f in futures) if name]

    return wait


def ordering_detach(network_name: str) -> list[str]:
    """Mirror of ``ordering_attach``: disconnect every member from an app network being removed."""
    inst = installation_id()
    done = []
    for member in OrderingMember.objects.select_related("region").order_by("index"):
        if not _on_networks(member):
            continue
        driver = driver_for_region(member.region)
        if driver.disconnect_from_network(member.name, network_name, installation_id=inst):
            done.append(member.name)
    return done


def ordering_app_credentials(app: ChainApp, *, token: bool = False) -> dict[str, str]:
    """The app's etcd user, password and prefix; on first use a spare user made ahead, else
    user and role made now.

    The role may read and write its prefix (``/bsn/apps/<app id>/``, or the spare's own
    ``/bsn/apps/<spare id>/``) and nothing else. Once made, one
    plain read; the first creation is serialised on the app's row (an app's node steps and
    its create's begin all ask at once, see ``chainapps.tasks.operation_begin``).
    """
    made = AppOrderingCredential.objects.filter(app_id=app.pk, provisioned_at__isnull=False).first()
    if made is not None:
        return _credentials(made)
    with transaction.atomic():
        ChainApp.objects.select_for_update().filter(pk=app.pk).first()
        return _app_credentials_locked(app, token=token)


def _app_credentials_locked(app: ChainApp, *, token: bool = False) -> dict[str, str]:
    """``ordering_app_credentials`` inside its transaction, the app's row locked: a spare
    user if there is one (``ordering_spares_fill``: no etcd call on the create's way), else
    one made now. ``token``: a user made now is also authenticated as once, for the warm
    nodes the create claims (``APP_TOKEN_FRESH_S``, ``ordering_node_env``): each would
    else authenticate itself as it starts, a Raft write on every member per node (with a
    spare, ``provisioning.operation_prepare`` gets it after: ``ordering_app_token``)."""
    app_id = str(app.pk)
    cred = AppOrderingCredential.objects.select_for_update().filter(app_id=app.pk).first()
    if cred is None:  # the caller holds the app's row: one comes here at a time
        cred = _take_spare(app)
        if cred is not None:
            return _credentials(cred)
        cred = _new_credential(app_id, app=app)
    password = decrypt_secret(cred.password_encrypted)
    if cred.provisioned_at is None:
        _make_user(cred, password, token=token, what=f"the etcd user of app {app_id}")
    return _credentials(cred, password=password)


def _new_credential(name_id: str, *, app: ChainApp | None = None) -> AppOrderingCredential:
    """A credential row: user and role ``app-<id hex>``, prefix ``/bsn/apps/<id>/`` (the
    app's id, or a spare's own), a random password, encrypted."""
    user = ospec.app_user(name_id)
    return AppOrderingCredential.objects.create(
        app=app,
        user=user,
        role=user,
        prefix=ospec.app_prefix(name_id),
        password_encrypted=encrypt_secret(secrets.token_urlsafe(24)),
    )


def _make_user(cred: AppOrderingCredential, password: str, *, token: bool, what: str) -> None:
    """Create ``cred``'s etcd user and role, the role confined to its prefix, and record it
    made (with a token of the user when asked). Idempotent: a user left by a rolled-back
    attempt gets this password."""
    root = admin_client()
    endpoints = root.endpoints  # read here: the calls below run in threads without the database

    def add_user() -> None:
        if not root.user_add(cred.user, password):
            root.user_change_password(cred.user, password)  # left from a rolled-back attempt

    try:
        # Two rounds of Raft writes instead of one after another: the user and the role
        # are independent; the grants need both, the user's token only the user.
        _side_by_side(add_user, lambda: root.role_add(cred.role))
        _, _, got = _side_by_side(
            lambda: root.role_grant_permission(cred.role, cred.prefix, prefix_end(cred.prefix), "READWRITE"),
            lambda: root.user_grant_role(cred.user, cred.role),
            lambda: _user_token(cred.user, password, endpoints) if token else ("", None),
        )
    except EtcdError as exc:
        raise _etcd_error(exc, f"creating {what}") from exc
    cred.token_encrypted, cred.token_at = got
    cred.provisioned_at = timezone.now()
    cred.save(update_fields=["provisioned_at", "token_encrypted", "token_at", "updated_at"])


def _take_spare(app: ChainApp) -> AppOrderingCredential | None:
    """A spare user given to ``app`` (None: none is left); the pool is made up once the
    create has finished (``provisioning._finish``: not beside its steps). One spare goes to
    one app: the update takes it only while it has none, so a request that raced for the
    same one takes the next."""
    spares = AppOrderingCredential.objects.filter(app__isnull=True, provisioned_at__isnull=False)
    for spare in spares.order_by("created_at")[:SPARE_TRIES]:
        taken = AppOrderingCredential.objects.filter(pk=spare.pk, app__isnull=True).update(
            app=app, updated_at=timezone.now()
        )
        if taken:
            spare.app = app
            return spare
    return None


def ordering_spares_fill_later() -> None:
    """Ask a worker to make up the spare users (``ordering_spares_fill``); a broker that is
    away leaves it to the next pass of the ordering heal (beat)."""
    from apps.ordering.tasks import ordering_spares_fill_task

    cluster = _cluster_now()
    if cluster is None or not cluster.spare_users:
        return  # none wanted (the default)
    try:
        ordering_spares_fill_task.apply_async(queue=settings.CELERY_TASK_DEFAULT_QUEUE, expires=60)
    except Exception as exc:  # noqa: BLE001 - the heal's pass fills them
        logger.info("spare etcd users not asked for: %s", exc)


def ordering_spares_fill() -> dict[str, Any]:
    """Make the spare etcd users the cluster wants (``OrderingCluster.spare_users``) and
    drop those beyond it: users and roles made ahead, each confined to a prefix of its own,
    that the next etcd apps take (``_take_spare``) instead of making theirs on the way of
    their create. Never beside an ``ordering_ensure`` pass or a heal (their lease): skipped
    then, the next take or heal fills."""
    report: dict[str, Any] = {"made": 0, "dropped": 0, "errors": []}
    cluster = OrderingCluster.objects.filter(pk=1).first()
    if cluster is None or not cluster.auth_enabled:
        return report
    spares = AppOrderingCredential.objects.filter(app__isnull=True)
    if spares.filter(provisioned_at__isnull=False).count() == cluster.spare_users == spares.count():
        return report  # as wanted: no lease taken
    with single_flight(OrderingCluster, cluster.pk, "heal_lease_until", settings.BSN_RECONCILE_LEASE, wait=0) as mine:
        if not mine:
            report["skipped"] = "a heal or full check of the ordering service is running"
            return report
        spares = list(AppOrderingCredential.objects.filter(app__isnull=True).order_by("created_at"))
        made = [c for c in spares if c.provisioned_at is not None]
        for cred in [c for c in spares if c.provisioned_at is None] + made[cluster.spare_users :]:
            try:
                _drop_spare(cred)  # half made (a fill that stopped) or no longer wanted
                report["dropped"] += 1
            except RuntimeError_ as exc:
                report["errors"].append(str(exc))
        for _ in range(max(0, cluster.spare_users - len(made))):
            # The row first, on its own: a fill stopped half way (etcd refused, the process
            # died) leaves a row without ``provisioned_at``, which no app takes and the next
            # fill drops with whatever of its user and role etcd has: nothing stays behind.
            cred = _new_credential(uuid.uuid4().hex)
            try:
                _make_user(cred, decrypt_secret(cred.password_encrypted), token=False, what="a spare etcd user")
                report["made"] += 1
            except RuntimeError_ as exc:
                report["errors"].append(str(exc))
                with contextlib.suppress(RuntimeError_):
                    _drop_spare(cred)
                break  # etcd refuses: the next pass tries again
    return report


def _drop_spare(cred: AppOrderingCredential) -> None:
    """Remove a spare's user and role from etcd (it never had keys), then its row; only
    while no app has taken it."""
    with transaction.atomic():
        row = AppOrderingCredential.objects.select_for_update().filter(pk=cred.pk, app__isnull=True).first()
        if row is None:
            return  # taken meanwhile
        _remove_user(row, purge=False, what=f"dropping the spare etcd user {row.user}")


def _credentials(cred: AppOrderingCredential, *, password: str | None = None) -> dict[str, str]:
    """What ``ordering_app_credentials`` gives: user, password, prefix, and ``token`` when
    one was got with the user under APP_TOKEN_FRESH_S ago."""
    if password is None:
        password = decrypt_secret(cred.password_encrypted)
    out = {"user": cred.user, "password": password, "prefix": cred.prefix}
    if cred.token_encrypted and cred.token_at and (timezone.now() - cred.token_at).total_seconds() < APP_TOKEN_FRESH_S:
        out["token"] = decrypt_secret(cred.token_encrypted)
    return out


def _side_by_side(*calls: Callable[[], Any]) -> list[Any]:
    """Independent etcd calls at once: a Raft write each, committed together in one round
    of the members where one after another each took its own. The results in order; the
    first failure is raised (after all have ended)."""
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="bsn-etcd") as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def ordering_app_token(app: ChainApp, creds: dict[str, str]) -> None:
    """A token of the app's etcd user (``creds``: its ``ordering_app_credentials``) for the
    warm nodes its create claims, when the user came from the spares (made ahead without
    one): one authentication for them all, got after the user was taken, outside the app's
    lock (a step that reads the credential before it is stored starts its node without
    one: that node authenticates itself)."""
    token, at = _user_token(creds["user"], creds["password"], _endpoints(_members_now()))
    if token:
        AppOrderingCredential.objects.filter(app_id=app.pk).update(token_encrypted=token, token_at=at)


def _user_token(user: str, password: str, endpoints: list[str]) -> tuple[str, Any]:
    """``(token, encrypted; when)`` of the app's etcd user, or ``("", None)`` if etcd gives
    none (then each node authenticates itself, as it does anyway once a token expires)."""
    client = EtcdClient(endpoints, user=user, password=password, timeout=ETCD_TIMEOUT)
    try:
        return encrypt_secret(client.authenticate()), timezone.now()
    except EtcdError as exc:
        logger.info("no etcd token for %s to hand to its nodes: %s", user, exc)
        return "", None


def ordering_node_env(app: ChainApp, node: LedgerNode, *, creds: dict[str, str] | None = None) -> dict[str, str]:
    """BSN_ORDERING / BSN_ETCD_* for one ledger node of an etcd-ordered app; ``creds``: the
    app's ``ordering_app_credentials`` when the caller has them already (else read here).

    Endpoints as seen from inside the node's container: members on the node's engine by
    container name (they are attached to the app's network, see ``ordering_attach``),
    members elsewhere by their published client URL.
    """
    members, cluster = _members_now(), _cluster_now()
    if len(members) < MEMBER_COUNT or cluster is None or not cluster.auth_enabled:
        ordering_ensure()  # the first etcd app: bring the service up (idempotent, serialised)
        _forget_rows()
        members = _members_now()
    endpoints = []
    for member in members:
        if same_engine(member.region, node.region) and _on_networks(member):
            endpoints.append(ospec.client_url(member.name))
        elif member.endpoint:
            endpoints.append(member.endpoint)
    creds = creds or ordering_app_credentials(app)
    env = {
        "BSN_ORDERING": "etcd",
        "BSN_ETCD_ENDPOINTS": ",".join(endpoints),
        "BSN_ETCD_USER": creds["user"],
        "BSN_ETCD_PASSWORD": creds["password"],
        "BSN_ETCD_PREFIX": creds["prefix"],
    }
    if node.warm and creds.get("token"):
        # A claim: the node starts now with it. Only there: a spec must not change with
        # each token where the driver starts anew on a changed secret (Swarm).
        env["BSN_ETCD_TOKEN"] = creds["token"]
    return env


def ordering_revoke_app(app: ChainApp, *, purge: bool = True) -> bool:
    """On app delete: remove the app's etcd user and role and (``purge``) its keys. Idempotent."""
    with transaction.atomic():
        cred = AppOrderingCredential.objects.select_for_update().filter(app_id=app.pk).first()
        if cred is None:
            return False
        if cred.provisioned_at is not None or purge:
            _remove_user(cred, purge=purge, what=f"revoking the etcd user of app {app.pk}")
        else:
            cred.delete()
    return True


def _remove_user(cred: AppOrderingCredential, *, purge: bool, what: str) -> None:
    """Remove ``cred``'s etcd user and role (those etcd does not have are fine) and, with
    ``purge``, the keys under its prefix; then its row. The caller holds the row."""
    root = admin_client()
    try:
        if purge:
            root.delete(cred.prefix, prefix_end(cred.prefix))
        root.user_delete(cred.user)
        root.role_delete(cred.role)
    except EtcdError as exc:
        raise _etcd_error(exc, what) from exc
    cred.delete()
