"""Writes for chain apps: each user action records an Operation and enqueues it on commit.

The background half (executing an operation) lives in ``apps.chainapps.provisioning``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.audit.services import audit_record
from apps.chainapps import provisioning
from apps.chainapps.keys import key_generate
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.node_auth import credential_generate
from apps.chainapps.selectors import region_node_counts, tenant_usage
from apps.chainapps.warm import warm_claim
from apps.common.errors import Conflict, DomainError
from apps.common.models import installation_id
from apps.regions.models import Region
from apps.runtime.spec import node_name
from apps.tenants.models import Tenant
from bsn.ledger.contracts import CONTRACTS, validate_params


@dataclass(frozen=True)
class ChainAppSpec:
    """What a tenant asks for when creating an app (already type-checked by the serializer)."""

    name: str
    framework: str
    regions: list[str]
    description: str = ""
    contract_template: str = "kv"
    contract_params: dict = field(default_factory=dict)
    tps_quota: int = 10
    storage_mb: int = 1024


def _enqueue(operation: Operation) -> None:
    from apps.chainapps.tasks import enqueue_operation

    op_id = str(operation.pk)
    transaction.on_commit(lambda: enqueue_operation(op_id))


def _new_operation(*, app: ChainApp, kind: str, actor, params: dict | None = None) -> Operation:
    operation = Operation.objects.create(
        tenant=app.tenant,
        app=app,
        kind=kind,
        params=params or {},
        created_by=actor if getattr(actor, "pk", None) else None,
        max_attempts=settings.BSN_OPERATION_MAX_ATTEMPTS,
        log=[Operation.log_line(f"{kind} requested")],
    )
    _enqueue(operation)
    return operation


def _audit_operation(app: ChainApp, operation: Operation, *, actor, request, **data) -> None:
    """Audit an operation started on an app: ``app.<kind>`` with the operation's id and ``data``."""
    audit_record(
        action=f"app.{operation.kind}",
        object_type="app",
        object_id=app.pk,
        tenant=app.tenant,
        actor=actor,
        data={"operation": str(operation.pk), **data},
        request=request,
    )


def _find_regions(codes: list[str]) -> dict[str, Region]:
    """``{code: region}`` of a region list from a request: at least one, each once, all known."""
    if not codes:
        raise ValidationError({"regions": "choose at least one region"})
    if len(set(codes)) != len(codes):
        raise ValidationError({"regions": "a region may appear only once"})
    found = {r.code: r for r in Region.objects.filter(code__in=codes)}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise ValidationError({"regions": f"unknown region(s): {', '.join(unknown)}"})
    return {c: found[c] for c in codes}


def _check_can_take_nodes(regions: list[Region]) -> None:
    """Each region accepts a new node: active, and below its capacity."""
    closed = [r for r in regions if r.status != Region.Status.ACTIVE]
    if closed:
        states = ", ".join(f"{r.code} is {r.status}" for r in closed)
        raise Conflict(f"Region not accepting new nodes: {states}.", code="region-unavailable")
    counts = region_node_counts()
    full = [r.code for r in regions if counts.get(r.pk, 0) >= r.max_nodes]
    if full:
        raise Conflict(f"Region full: {', '.join(full)} has no capacity left.", code="region-full")


def _resolve_regions(codes: list[str]) -> list[Region]:
    regions = list(_find_regions(codes).values())
    _check_can_take_nodes(regions)
    return regions


def _new_node(*, app: ChainApp, region: Region) -> LedgerNode:
    """An unsaved node row of ``app`` in ``region``: deterministic name, its own key and credential."""
    node_key = key_generate()
    return LedgerNode(
        app=app,
        region=region,
        framework=app.framework,
        name=node_name(installation_id=installation_id(), app_id=str(app.pk), region_code=region.code),
        public_key=node_key.public_key,
        private_key_encrypted=node_key.private_key_encrypted,
        api_credential_encrypted=credential_generate(),
    )


def ordering_for(regions: list[Region]) -> str:
    """etcd when every region runs Docker (the ordering service lives there), solo otherwise.

    More than one node needs a shared order, so a multi-region app must be etcd-ordered.
    Swarm regions join such an app (their nodes reach the ordering members, which run on
    the Docker regions, at their published endpoints); an app on one Swarm region alone
    orders for itself (solo), as one Swarm service needs no shared order.
    """
    if all(r.driver == Region.Driver.DOCKER for r in regions):
        return ChainApp.Ordering.ETCD
    containers = (Region.Driver.DOCKER, Region.Driver.SWARM)
    if len(regions) > 1 and all(r.driver in containers for r in regions):
        return ChainApp.Ordering.ETCD
    if len(regions) > 1:
        process = ", ".join(r.code for r in regions if r.driver not in containers)
        raise ValidationError(
            {
                "regions": (
                    "an app on more than one region needs the etcd ordering service, which runs "
                    f"only with Docker (and Swarm) regions; {process} use the process driver. Choose one "
                    "region, or only Docker and Swarm regions."
                )
            }
        )
    return ChainApp.Ordering.SOLO


def _check_quotas(*, tenant: Tenant, spec: ChainAppSpec) -> None:
    usage = tenant_usage(tenant=tenant)
    problems = []
    if usage["apps"] + 1 > tenant.max_apps:
        problems.append(f"apps {usage['apps']}/{tenant.max_apps}")
    if usage["nodes"] + len(spec.regions) > tenant.max_nodes:
        problems.append(f"nodes {usage['nodes']}+{len(spec.regions)}>{tenant.max_nodes}")
    if usage["tps"] + spec.tps_quota > tenant.max_tps:
        problems.append(f"TPS {usage['tps']}+{spec.tps_quota}>{tenant.max_tps}")
    if usage["storage_mb"] + spec.storage_mb > tenant.max_storage_mb:
        problems.append(f"storage {usage['storage_mb']}+{spec.storage_mb}>{tenant.max_storage_mb} MB")
    if problems:
        raise Conflict(f"Tenant quota exceeded: {'; '.join(problems)}.", code="quota-exceeded")


def _check_contract(*, tenant: Tenant, framework: Framework, spec: ChainAppSpec) -> None:
    """The template exists, the framework offers it, this tenant may use it, a node accepts the params."""
    template = spec.contract_template
    if template not in CONTRACTS:
        raise ValidationError({"contract_template": [f"must be one of {', '.join(CONTRACTS)}"]})
    offered = framework.offered_templates()
    if offered and template not in offered:
        raise ValidationError({"contract_template": [f"{framework.slug} does not offer '{template}'"]})
    if CONTRACTS[template].platform_only and tenant.kind != Tenant.Kind.PLATFORM:
        raise ValidationError({"contract_template": [f"'{template}' is reserved for the platform"]})
    try:
        validate_params(template, spec.contract_params)
    except ValueError as exc:
        raise ValidationError({"contract_params": [str(exc)]}) from None


def framework_find(ref: str) -> Framework | None:
    """An active framework by slug (as the create API names them) or by ``name:version``."""
    framework = Framework.objects.filter(slug=ref, is_active=True).first()
    if framework is None and ":" in ref:
        name, _, version = ref.rpartition(":")
        framework = Framework.objects.filter(name=name, version=version, is_active=True).first()
    return framework


def chainapp_create(*, tenant: Tenant, actor, spec: ChainAppSpec, request=None) -> Operation:
    """Validate, then write app + nodes + provision operation in one transaction."""
    framework = Framework.objects.filter(slug=spec.framework, is_active=True).first()
    if framework is None:
        raise ValidationError({"framework": f"unknown framework '{spec.framework}'"})
    _check_contract(tenant=tenant, framework=framework, spec=spec)
    with transaction.atomic():
        # Lock the tenant row: quota checks and the insert are one decision.
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        regions = _resolve_regions(spec.regions)
        ordering = ordering_for(regions)
        if ChainApp.objects.for_tenant(tenant).filter(name=spec.name, deleted_at__isnull=True).exists():
            raise Conflict(f"An app named '{spec.name}' already exists in this tenant.", code="duplicate-name")
        _check_quotas(tenant=tenant, spec=spec)
        try:
            admin_key = key_generate()
            with transaction.atomic():
                app = ChainApp.objects.create(
                    tenant=tenant,
                    name=spec.name,
                    description=spec.description,
                    framework=framework,
                    contract_template=spec.contract_template,
                    contract_params=spec.contract_params,
                    tps_quota=spec.tps_quota,
                    storage_mb=spec.storage_mb,
                    ordering=ordering,
                    admin_public_key=admin_key.public_key,
                    admin_private_key_encrypted=admin_key.private_key_encrypted,
                )
        except IntegrityError as exc:
            raise Conflict(f"An app named '{spec.name}' already exists in this tenant.", code="duplicate-name") from exc
        nodes = [_new_node(app=app, region=region) for region in regions]
        for node in nodes:
            warm_claim(node)  # a node started ahead, where its region keeps them
        LedgerNode.objects.bulk_create(nodes)
        operation = _new_operation(app=app, kind=Operation.Kind.PROVISION, actor=actor)
        audit_record(
            action="app.create",
            object_type="app",
            object_id=app.pk,
            tenant=tenant,
            actor=actor,
            data={"name": spec.name, "regions": spec.regions, "ordering": ordering, "operation": str(operation.pk)},
            request=request,
        )
    return operation


def chainapp_update(*, app: ChainApp, actor, data: dict, request=None) -> ChainApp:
    """Rename or describe the app; platform staff may also set its ``tps_quota`` and
    ``storage_mb`` (within the tenant's ``max_tps`` / ``max_storage_mb``; enforced at the
    gateway at once, audited with before/after)."""
    allowed = {"name", "description", "tps_quota", "storage_mb"}
    staff_only = {"tps_quota", "storage_mb"}
    changes = {k: v for k, v in data.items() if k in allowed}
    if app.deleted_at is not None:
        raise Conflict("This app is deleted.", code="app-deleted")
    if not changes:
        return app
    if staff_only & changes.keys() and not getattr(actor, "is_staff", False):
        raise DomainError(
            "Quotas are set by platform staff, not by the tenant: ask your platform operator.",
            code="staff-only",
            status=403,
        )
    duplicate = Conflict(f"An app named '{changes.get('name')}' already exists in this tenant.", code="duplicate-name")
    with transaction.atomic():
        if "tps_quota" in changes:
            tenant = Tenant.objects.select_for_update().get(pk=app.tenant_id)
            others = tenant_usage(tenant=tenant)["tps"] - app.tps_quota
            if others + changes["tps_quota"] > tenant.max_tps:
                raise Conflict(
                    f"Tenant quota exceeded: TPS {others}+{changes['tps_quota']}>{tenant.max_tps}; "
                    "raise the tenant's max_tps first.",
                    code="quota-exceeded",
                )
            changes["tps_quota_before"] = app.tps_quota
        if "storage_mb" in changes:
            tenant = Tenant.objects.select_for_update().get(pk=app.tenant_id)
            others = tenant_usage(tenant=tenant)["storage_mb"] - app.storage_mb
            if others + changes["storage_mb"] > tenant.max_storage_mb:
                raise Conflict(
                    f"Tenant quota exceeded: storage {others}+{changes['storage_mb']}>{tenant.max_storage_mb} MB; "
                    "raise the tenant's max_storage_mb first.",
                    code="quota-exceeded",
                )
            changes["storage_mb_before"] = app.storage_mb
        if (
            "name" in changes
            and ChainApp.objects.for_tenant(app.tenant)
            .filter(name=changes["name"], deleted_at__isnull=True)
            .exclude(pk=app.pk)
            .exists()
        ):
            raise duplicate
        fields = [k for k in changes if k in allowed]
        for key in fields:
            setattr(app, key, changes[key])
        try:
            with transaction.atomic():  # a concurrent rename can still hit the unique constraint
                app.save(update_fields=[*fields, "updated_at"])
        except IntegrityError as exc:
            raise duplicate from exc
        audit_record(
            action="app.update",
            object_type="app",
            object_id=app.pk,
            tenant=app.tenant,
            actor=actor,
            data=changes,
            request=request,
        )
    return app


def _change_desired(
    *, app: ChainApp, actor, desired: str, kind: str, status: str, params: dict | None = None, request=None
) -> Operation:
    with transaction.atomic():
        locked = ChainApp.objects.select_for_update().get(pk=app.pk)
        if locked.desired_state == ChainApp.DesiredState.DELETED:
            raise Conflict("This app is deleted.", code="app-deleted")
        busy = Operation.objects.filter(app=locked).open().first()
        if busy is not None and kind != Operation.Kind.DELETE:
            raise Conflict(
                f"Operation {busy.pk} ({busy.kind}) is still {busy.status}; wait for it to finish.",
                code="operation-in-progress",
            )
        if busy is not None:
            # Delete wins over whatever was pending: the pending job is cancelled, a running
            # one notices the new desired state at its next step and stops.
            if busy.status == Operation.Status.PENDING:
                busy.move_to(Operation.Status.CANCELLED, finished_at=timezone.now(), last_error="superseded by delete")
        locked.desired_state = desired
        locked.status = status
        update = ["desired_state", "status", "updated_at"]
        if desired == ChainApp.DesiredState.DELETED:
            locked.deleted_at = timezone.now()
            update.append("deleted_at")
        locked.save(update_fields=update)
        operation = _new_operation(app=locked, kind=kind, actor=actor, params=params)
        _audit_operation(locked, operation, actor=actor, request=request, **(params or {}))
    return operation


def chainapp_start(*, app: ChainApp, actor, request=None, resume_suspended: bool = False) -> Operation:
    """Start a stopped app. An app billing stopped for an unpaid invoice (docs/billing.md)
    stays stopped until the invoice is paid: 409 ``app-suspended`` naming it; billing's own
    resume passes ``resume_suspended``."""
    if not resume_suspended:
        # Asked through the reverse relation: chainapps does not import billing.
        held = (
            app.billing_suspensions.filter(
                suspension__ended_at__isnull=True, resumed_at__isnull=True, stop_operation__isnull=False
            )
            .select_related("suspension")
            .first()
        )
        if held is not None:
            raise Conflict(
                f"This app is stopped until an unpaid invoice is paid ({held.suspension.reason}); "
                "it starts again by itself once the invoice is paid.",
                code="app-suspended",
            )
    return _change_desired(
        app=app,
        actor=actor,
        desired=ChainApp.DesiredState.RUNNING,
        kind=Operation.Kind.START,
        status=ChainApp.Status.PROVISIONING,
        request=request,
    )


def node_facts_refresh_if_old(nodes) -> int:
    """Nodes whose state and chain facts are older than BSN_NODE_FACTS_MAX_AGE get a refresh
    queued on their region's worker (deduplicated per node): the next read shows current
    facts within seconds. Queues only; returns how many were asked for."""
    from apps.chainapps.tasks import node_refresh_later

    max_age = settings.BSN_NODE_FACTS_MAX_AGE
    cutoff = timezone.now() - timedelta(seconds=max_age)
    asked = 0
    for node in nodes:
        if node.state == LedgerNode.State.REMOVED or (node.chain_seen_at and node.chain_seen_at >= cutoff):
            continue
        node_refresh_later(node, facts=True)
        asked += 1
    return asked


def operation_cancel(*, operation: Operation, actor, request=None) -> Operation:
    """Cancel an operation of the caller's tenant (apps.chainapps.provisioning.operation_cancel)."""
    cancelled = provisioning.operation_cancel(str(operation.pk), by=getattr(actor, "username", "") or "the platform")
    audit_record(
        action="operation.cancel",
        object_type="operation",
        object_id=str(operation.pk),
        tenant=operation.tenant,
        actor=actor,
        data={"kind": operation.kind, "app": str(operation.app_id)},
        request=request,
    )
    return cancelled


def chainapp_stop(*, app: ChainApp, actor, request=None) -> Operation:
    return _change_desired(
        app=app,
        actor=actor,
        desired=ChainApp.DesiredState.STOPPED,
        kind=Operation.Kind.STOP,
        status=ChainApp.Status.STOPPING,
        request=request,
    )


def chainapp_delete(*, app: ChainApp, actor, keep_data: bool = True, request=None) -> Operation:
    return _change_desired(
        app=app,
        actor=actor,
        desired=ChainApp.DesiredState.DELETED,
        kind=Operation.Kind.DELETE,
        status=ChainApp.Status.DELETING,
        params={"keep_data": keep_data},
        request=request,
    )


def _lock_for_lifecycle(app: ChainApp) -> ChainApp:
    """The app's row, locked, if it may start an upgrade or a scale: not deleted, meant
    to run, and no other operation open. Raises Conflict otherwise. Call in a transaction."""
    locked = ChainApp.objects.select_for_update().select_related("framework").get(pk=app.pk)
    if locked.desired_state == ChainApp.DesiredState.DELETED:
        raise Conflict("This app is deleted.", code="app-deleted")
    busy = Operation.objects.filter(app=locked).open().first()
    if busy is not None:
        raise Conflict(
            f"Operation {busy.pk} ({busy.kind}) is still {busy.status}; wait for it to finish.",
            code="operation-in-progress",
        )
    if locked.desired_state != ChainApp.DesiredState.RUNNING:
        raise Conflict(
            f"The app is {locked.desired_state}: start it before upgrading, scaling or rotating it.",
            code="app-not-running",
        )
    return locked


def chainapp_upgrade(*, app: ChainApp, actor, framework: str, request=None) -> Operation:
    """Move the app's nodes to another version of its framework, one node at a time
    (provisioning: each node healthy at the chain head before the next is touched)."""
    target = framework_find(framework)
    if target is None:
        raise ValidationError({"framework": f"unknown framework '{framework}'"})
    with transaction.atomic():
        locked = _lock_for_lifecycle(app)
        refusal = target.upgrade_refusal(locked)
        if refusal:
            raise Conflict(f"Cannot upgrade to {target.slug}: {refusal}.", code="framework-incompatible")
        nodes = list(locked.nodes.exclude(state=LedgerNode.State.REMOVED).select_related("framework"))
        if locked.framework_id == target.pk and all(n.current_framework.pk == target.pk for n in nodes):
            raise Conflict(f"The app already runs {target.slug} on every node.", code="framework-unchanged")
        params = {"framework": target.slug, "version": target.version, "from": locked.framework.slug}
        operation = _new_operation(app=locked, kind=Operation.Kind.UPGRADE, actor=actor, params=params)
        _audit_operation(locked, operation, actor=actor, request=request, **params)
    return operation


def chainapp_rotate_credentials(*, app: ChainApp, actor, request=None) -> Operation:
    """Give every node of the app a new API credential, one node at a time: each node is
    replaced (same data volume and key) with the new credential as a file (a new Swarm
    secret on Swarm) and must prove itself with it at the chain head before the next."""
    with transaction.atomic():
        locked = _lock_for_lifecycle(app)
        nodes = locked.nodes.exclude(state=LedgerNode.State.REMOVED).count()
        params = {"rotates": "node-api-credential"}  # what is rotated (never a value)
        operation = _new_operation(app=locked, kind=Operation.Kind.ROTATE, actor=actor, params=params)
        _audit_operation(locked, operation, actor=actor, request=request, nodes=nodes, **params)
    return operation


def chainapp_scale(*, app: ChainApp, actor, regions: list[str], keep_data: bool = True, request=None) -> Operation:
    """Set the regions the app runs in: nodes are added on new regions (as at create:
    region state and capacity, the tenant's node quota, the app's ordering) and removed
    from dropped ones (their data volumes kept unless ``keep_data`` is false)."""
    with transaction.atomic():
        # The tenant row first (as create): the node quota check and the new rows are one decision.
        tenant = Tenant.objects.select_for_update().get(pk=app.tenant_id)
        locked = _lock_for_lifecycle(app)
        wanted = _find_regions(regions)
        rows = {n.region.code: n for n in locked.nodes.select_related("region")}
        current = [code for code, n in rows.items() if n.state != LedgerNode.State.REMOVED]
        added = [code for code in wanted if code not in current]
        removed = sorted(code for code in current if code not in wanted)
        if not added and not removed:
            raise Conflict("The app already runs in exactly these regions.", code="regions-unchanged")
        if not any(code in wanted for code in current):
            raise ValidationError(
                {"regions": "keep at least one of the app's current regions: its chain lives on their nodes"}
            )
        if ordering_for(list(wanted.values())) != locked.ordering:
            raise ValidationError({"regions": f"the app is ordered {locked.ordering}; these regions need another"})
        _check_can_take_nodes([wanted[code] for code in added])
        usage = tenant_usage(tenant=tenant)
        if usage["nodes"] + len(added) > tenant.max_nodes:
            raise Conflict(
                f"Tenant quota exceeded: nodes {usage['nodes']}+{len(added)}>{tenant.max_nodes}.",
                code="quota-exceeded",
            )
        for code in added:
            node = rows.get(code)
            if node is None:
                node = _new_node(app=locked, region=wanted[code])
                warm_claim(node)  # a node started ahead, where its region keeps them
                node.save()
                continue
            # The region's node was scaled away before: it comes back as itself (key,
            # credential, and its data volume if that was kept), as a new generation.
            node.state, node.endpoint, node.last_error = LedgerNode.State.PENDING, "", ""
            node.generation += 1
            node.framework = locked.framework
            node.save(update_fields=["state", "endpoint", "last_error", "generation", "framework", "updated_at"])
        params = {"regions": list(wanted), "added": added, "removed": removed, "keep_data": keep_data}
        operation = _new_operation(app=locked, kind=Operation.Kind.SCALE, actor=actor, params=params)
        _audit_operation(locked, operation, actor=actor, request=request, **params)
    return operation


def node_restart_request(*, nodes, actor, request=None) -> tuple[list[LedgerNode], list[str]]:
    """Queue a restart (stop, start, verify: ``reconcile.node_restart``) of each node on its
    region's worker: the web process never calls an engine. Removed nodes and nodes of
    apps not meant to run are skipped. Audited ``node.restart`` per node, then queued
    (the task re-reads the node and exits if there is nothing to restart). Returns
    (queued, skipped names)."""
    from apps.chainapps.tasks import node_restart

    queued, skipped = [], []
    for node in nodes:
        if node.state == LedgerNode.State.REMOVED or node.app.desired_state != ChainApp.DesiredState.RUNNING:
            skipped.append(node.name)
            continue
        audit_record(
            action="node.restart",
            object_type="node",
            object_id=node.pk,
            tenant=node.app.tenant,
            actor=actor,
            data={"app": str(node.app_id), "region": node.region.code},
            request=request,
        )
        node_restart.apply_async((str(node.pk),), queue=node.region.queue, expires=300)
        queued.append(node)
    return queued, skipped


def region_reconcile_request(*, regions, actor=None, actor_label: str = "", request=None) -> list[str]:
    """Queue a reconcile pass on each region's worker now (the console's "reconcile now"
    on regions, apps and nodes); audited ``region.reconcile``. Returns the queues."""
    from apps.chainapps.tasks import region_reconcile_now

    regions = list(regions)
    for region in regions:
        audit_record(
            action="region.reconcile",
            object_type="region",
            object_id=region.code,
            actor=actor,
            actor_label=actor_label,
            request=request,
        )
    return region_reconcile_now(regions)


# What an operator gives to register a framework (docs/images.md): the built-in one is
# made by migrations from this code and is never edited by hand.
FRAMEWORK_FIELDS = (
    "slug",
    "name",
    "version",
    "image",
    "command",
    "port",
    "health_path",
    "default_cpus",
    "default_memory_mb",
    "default_pids",
    "contract_templates",
)


def framework_register(*, actor, request=None, **fields) -> Framework:
    """Register another ledger runtime (e.g. a newer version of a family) without code
    changes. A framework is immutable once registered (apps run it; a new version is a new
    row and apps move with ``chainapp_upgrade``); only ``is_active`` changes. Audited."""
    unknown = set(fields) - set(FRAMEWORK_FIELDS)
    if unknown:
        raise DomainError(f"unknown framework field(s): {', '.join(sorted(unknown))}", code="invalid", status=400)
    if Framework.objects.filter(slug=fields.get("slug")).exists():
        raise Conflict(f"A framework '{fields.get('slug')}' already exists.", code="duplicate-framework")
    unknown_templates = set(fields.get("contract_templates") or []) - set(CONTRACTS)
    if unknown_templates:
        raise DomainError(
            f"unknown contract template(s): {', '.join(sorted(unknown_templates))}; known: {', '.join(CONTRACTS)}",
            code="invalid",
            status=400,
        )
    with transaction.atomic():
        framework = Framework.objects.create(builtin=False, is_active=True, **fields)
        audit_record(
            action="framework.register",
            object_type="framework",
            object_id=framework.slug,
            actor=actor,
            data={"image": framework.image, "version": framework.version},
            request=request,
        )
    return framework


def framework_set_active(*, framework: Framework, active: bool, actor, request=None) -> Framework:
    """Offer a framework to new apps and upgrades (active) or stop offering it (apps that
    run it keep running). Audited ``framework.activate`` / ``framework.deactivate``."""
    with transaction.atomic():
        updated = Framework.objects.filter(pk=framework.pk).exclude(is_active=active).update(is_active=active)
        if updated:
            audit_record(
                action="framework.activate" if active else "framework.deactivate",
                object_type="framework",
                object_id=framework.slug,
                actor=actor,
                request=request,
            )
    framework.refresh_from_db()
    return framework
