"""Frameworks, chain apps, their ledger nodes and the operations that change them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from apps.common.models import TimeStamped
from apps.regions.models import Region
from apps.tenants.models import Tenant
from bsn.ledger.contracts import CONTRACTS


class Framework(TimeStamped):
    """A ledger runtime regions can run: image, command, port and health path."""

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=32)
    image = models.CharField(max_length=255)
    command = models.JSONField(default=list, blank=True, help_text="empty: the image's CMD")
    port = models.PositiveIntegerField(default=8080)
    health_path = models.CharField(max_length=100, default="/health")
    default_cpus = models.FloatField(default=0.5)
    default_memory_mb = models.PositiveIntegerField(default=64)
    default_pids = models.PositiveIntegerField(default=64)
    contract_templates = models.JSONField(default=list, blank=True)
    builtin = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return f"{self.slug} {self.version}"

    def offered_templates(self) -> list[str]:
        """Contract templates its apps may use; empty: any template of the registry.

        The built-in node is built from this code, so it offers the registry itself
        (``bsn.ledger.contracts.CONTRACTS``) whatever the stored column still says.
        """
        return list(CONTRACTS) if self.builtin else list(self.contract_templates)

    def upgrade_refusal(self, app: ChainApp) -> str:
        """Why ``app`` cannot move to this framework ("" if it can).

        A framework's ``name`` is its ledger family (one node program, successive
        ``version``s): its nodes read the same data volume, speak the same protocol and
        run the same contracts. An app moves only between versions of one family, to a
        framework that is active and offers the app's contract template.
        """
        current = app.framework
        if not self.is_active:
            return f"framework {self.slug} is not active"
        if self.name != current.name:
            return (
                f"{self.slug} is {self.name!r}, another ledger family than the app's {current.slug} "
                f"({current.name!r}); an app moves only between versions of its own family"
            )
        offered = self.offered_templates()
        if offered and app.contract_template not in offered:
            return f"{self.slug} does not offer the app's contract template {app.contract_template!r}"
        return ""


class ChainAppQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> ChainAppQuerySet:
        return self.filter(tenant=tenant)

    def alive(self) -> ChainAppQuerySet:
        return self.exclude(status=ChainApp.Status.DELETED)


class ChainApp(TimeStamped):
    """A tenant's deployed chain app, running on one node per chosen region."""

    class DesiredState(models.TextChoices):
        RUNNING = "running"
        STOPPED = "stopped"
        DELETED = "deleted"

    class Ordering(models.TextChoices):
        SOLO = "solo"  # one node orders for itself (process driver, development)
        ETCD = "etcd"  # the platform's etcd ordering service (docker regions)

    class Status(models.TextChoices):
        PENDING = "pending"
        PROVISIONING = "provisioning"
        RUNNING = "running"
        DEGRADED = "degraded"
        STOPPING = "stopping"
        STOPPED = "stopped"
        FAILED = "failed"
        DELETING = "deleting"
        DELETED = "deleted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="apps")
    name = models.CharField(max_length=63)
    description = models.TextField(blank=True, max_length=2000)
    framework = models.ForeignKey(Framework, on_delete=models.PROTECT, related_name="apps")
    contract_template = models.CharField(max_length=32, default="kv")
    contract_params = models.JSONField(default=dict, blank=True)
    tps_quota = models.PositiveIntegerField(default=10)
    storage_mb = models.PositiveIntegerField(default=1024)
    # Why the app is failed (the error of the operation that gave up); empty otherwise.
    status_reason = models.CharField(max_length=500, blank=True)
    desired_state = models.CharField(max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    version = models.PositiveIntegerField(default=1)
    deleted_at = models.DateTimeField(null=True, blank=True)
    ordering = models.CharField(max_length=8, choices=Ordering.choices, default=Ordering.SOLO)
    # The app admin key signs `_config` transactions (user.add / user.revoke); every node
    # knows its public part. The private part is only ever stored encrypted.
    admin_public_key = models.CharField(max_length=64, blank=True)
    admin_private_key_encrypted = models.TextField(blank=True)

    objects = ChainAppQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A name is unique among a tenant's apps that are not deleted.
            models.UniqueConstraint(
                fields=["tenant", "name"], condition=models.Q(deleted_at__isnull=True), name="chainapp_unique_live_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"

    def derive_status(self, node_states: list[str], *, chain_ok: bool = True) -> str:
        """Status from the desired state and what was observed of the nodes.

        ``chain_ok`` is False when the nodes' chains disagree or lag (or an etcd app has
        no proposer): every node healthy is then still only ``degraded``.
        """
        if self.desired_state == self.DesiredState.DELETED:
            return self.Status.DELETED if not node_states else self.Status.DELETING
        healthy = [s for s in node_states if s == LedgerNode.State.RUNNING]
        if self.desired_state == self.DesiredState.STOPPED:
            return self.Status.STOPPED if not healthy else self.Status.STOPPING
        if node_states and len(healthy) == len(node_states):
            return self.Status.RUNNING if chain_ok else self.Status.DEGRADED
        if healthy:
            return self.Status.DEGRADED
        if self.status in (self.Status.PENDING, self.Status.PROVISIONING):
            return self.Status.PROVISIONING
        # No node healthy: the reconciler is restoring them (degraded), unless the platform
        # gave up (an operation failed: it set FAILED with the reason, which stays until a
        # node is healthy again). A node being healed never makes the app "failed".
        return self.Status.FAILED if self.status == self.Status.FAILED else self.Status.DEGRADED


class LedgerNode(TimeStamped):
    """One ledger node of an app in one region."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"  # container up and /health answered
        UNHEALTHY = "unhealthy"
        STOPPED = "stopped"
        MISSING = "missing"
        UNKNOWN = "unknown"  # the engine did not answer
        REMOVED = "removed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="nodes")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="nodes")
    name = models.CharField(max_length=120, unique=True)
    runtime_id = models.CharField(max_length=128, blank=True)
    endpoint = models.CharField(max_length=255, blank=True)
    # The host port the node is published on, allocated once from BSN_NODE_PORT_RANGE so
    # that the endpoint survives restarts (null: not allocated, or the process driver).
    host_port = models.PositiveIntegerField(null=True, blank=True, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    generation = models.PositiveIntegerField(default=1)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The node key signs the blocks this node proposes; public part in BSN_NODE_KEYS of
    # every node of the app, private part only encrypted here and in the node's env.
    public_key = models.CharField(max_length=64, blank=True)
    private_key_encrypted = models.TextField(blank=True)
    # The node's own API credential (docs/ledger-protocol.md "Node authentication"): the
    # control plane, the gateway and the app's peers sign their requests with it and the
    # node MACs its replies with it. Only encrypted here, and a file in the node.
    api_credential_encrypted = models.TextField(blank=True)
    # While a rotation replaces the node: the credential it ran with, to put back if the
    # runtime rolls the replacement back (Swarm). Empty otherwise.
    api_credential_previous_encrypted = models.TextField(blank=True)
    # What this node runs: the app's framework, until a rolling upgrade moves the nodes one
    # at a time (a failed upgrade leaves nodes on both; the app's framework changes once
    # all have moved). Empty on rows made before nodes recorded it: the app's framework.
    framework = models.ForeignKey(Framework, null=True, blank=True, on_delete=models.PROTECT, related_name="nodes")
    # Last /chain observation by the reconciler (empty until a running node answered).
    chain_height = models.PositiveBigIntegerField(null=True, blank=True)
    chain_head = models.CharField(max_length=64, blank=True)
    chain_proposer = models.CharField(max_length=64, blank=True)
    chain_seen_at = models.DateTimeField(null=True, blank=True)
    # The warm node it was claimed from (docs/provisioning.md, "Warm nodes"): its objects
    # carry that id (apps.runtime.spec.LABEL_WARM) instead of this node's. Empty: made for it.
    warm = models.CharField(max_length=36, blank=True)

    class Meta:
        ordering = ["region__code"]
        constraints = [models.UniqueConstraint(fields=["app", "region"], name="ledgernode_one_per_region")]

    def __str__(self) -> str:
        return self.name

    @property
    def current_framework(self) -> Framework:
        """The framework this node runs (its own, else the app's)."""
        return self.framework if self.framework_id else self.app.framework

    @cached_property
    def siblings(self) -> list[LedgerNode]:
        """The app's other nodes (not those scaled away or deleted), by region code.

        Read once per node object and kept on it: a node step asks several times (its peers
        for its configuration, whether a peer shares its engine), and an app's nodes do not
        change under a running step (one operation of an app runs at a time). A new read
        wants a new node object (as every step, pass and request loads its own)."""
        others = LedgerNode.objects.filter(app_id=self.app_id).exclude(pk=self.pk)
        others = others.exclude(state=LedgerNode.State.REMOVED)
        return list(others.select_related("region", "framework", "app__framework").order_by("region__code"))


class OperationQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> OperationQuerySet:
        return self.filter(tenant=tenant)

    def open(self) -> OperationQuerySet:
        return self.filter(status__in=[Operation.Status.PENDING, Operation.Status.RUNNING])


class InvalidTransition(Exception):
    """An operation was asked to make a status change its state machine does not allow."""


class Operation(TimeStamped):
    """A long-running job on a chain app, with its state machine and log."""

    class Kind(models.TextChoices):
        PROVISION = "provision"
        START = "start"
        STOP = "stop"
        DELETE = "delete"
        UPGRADE = "upgrade"  # rolling: one node at a time to another framework version
        SCALE = "scale"  # nodes added on new regions, removed from dropped ones
        ROTATE = "rotate"  # rolling: each node replaced with a new API credential

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # Every status change goes through move_to(), which refuses anything not listed here.
    # RUNNING -> RUNNING: a worker takes over an operation whose worker stopped.
    TRANSITIONS = {
        Status.PENDING: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
        Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.PENDING, Status.RUNNING, Status.CANCELLED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
        Status.CANCELLED: set(),
    }
    FINISHED = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="operations")
    app = models.ForeignKey(ChainApp, on_delete=models.CASCADE, related_name="operations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)
    # One entry per node: {"<node id>": {"state": "pending|done|failed|cancelled|skipped", "error": ""}};
    # upgrade and scale steps also carry "order" (steps run order by order: all of one
    # order, then the next), "action" and their progress (provisioning.py).
    steps = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.app_id} ({self.status})"

    def can_become(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.Status(self.status)]

    def move_to(self, status: str, **fields) -> bool:
        """The one way an operation's status changes: one conditional UPDATE, from the
        status this object holds to ``status`` (with ``fields``). Raises InvalidTransition
        for a change TRANSITIONS does not allow; returns False, changing nothing, when
        another process moved the operation first."""
        current = self.Status(self.status)
        if not self.can_become(status):
            raise InvalidTransition(f"operation {self.pk}: {current} cannot become {status}")
        fields = {**fields, "status": status, "updated_at": timezone.now()}
        if not type(self).objects.filter(pk=self.pk, status=current).update(**fields):
            return False
        for name, value in fields.items():
            setattr(self, name, value)
        return True

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @staticmethod
    def log_line(message: str, detail: str = "") -> dict:
        """One log entry. ``message`` is for the tenant; ``detail`` (internal: engine
        errors, endpoints) for platform staff only (apps/common/incidents.py)."""
        entry = {"at": timezone.now().isoformat(), "message": message}
        if detail:
            entry["detail"] = detail
        return entry


class WarmNode(models.Model):
    """A ledger container started ahead of any app in a region, waiting to be claimed.

    docs/provisioning.md, "Warm nodes": a region keeps ``Region.warm_nodes`` of them for
    each active built-in framework; creating an app claims one per region where one is
    ready (the row goes; the node takes its name, host port and id), so the node step
    only hands it its configuration instead of making a network, volume and container.
    """

    class State(models.TextChoices):
        CREATING = "creating"  # the row is written first: its objects are never orphans
        READY = "ready"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="warm_nodes_made")
    framework = models.ForeignKey(Framework, on_delete=models.CASCADE, related_name="warm_nodes")
    image = models.CharField(max_length=255)  # the framework's image when it was made
    name = models.CharField(max_length=120, unique=True)
    host_port = models.PositiveIntegerField(null=True, blank=True, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CREATING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.name
