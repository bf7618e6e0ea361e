"""The platform's ordering service: an etcd cluster of three members, and per-app credentials."""

from __future__ import annotations

from django.db import models

from apps.chainapps.models import ChainApp
from apps.common.models import TimeStamped
from apps.regions.models import Region

MEMBER_COUNT = 3


class OrderingCluster(TimeStamped):
    """The one ordering cluster of this installation (singleton row, pk=1)."""

    class State(models.TextChoices):
        PENDING = "pending"  # not bootstrapped yet
        HEALTHY = "healthy"  # every member answers and there is a leader
        DEGRADED = "degraded"  # a quorum serves, some member does not
        UNAVAILABLE = "unavailable"  # no quorum: no app can order

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    token = models.CharField(max_length=80, help_text="etcd --initial-cluster-token")
    root_password_encrypted = models.TextField()
    auth_enabled = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    heal_lease_until = models.DateTimeField(null=True, blank=True, editable=False)  # one heal at a time
    last_error = models.TextField(blank=True)
    # The CA of peer TLS when members span engines (apps/ordering/peer_tls.py).
    peer_ca_cert = models.TextField(blank=True)
    peer_ca_key_encrypted = models.TextField(blank=True)
    # etcd users made ahead for the next etcd apps (``services.ordering_spares_fill``), so
    # that a create makes none on its way: `bsn_ordering spares N`.
    spare_users = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"ordering cluster ({self.state})"


class OrderingMember(TimeStamped):
    """One etcd member: a hardened container in one region, with its own volume."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"  # container up and the member answers with a leader
        UNHEALTHY = "unhealthy"  # container up, member does not answer (yet)
        STOPPED = "stopped"
        MISSING = "missing"
        UNKNOWN = "unknown"  # the engine did not answer

    index = models.PositiveSmallIntegerField(unique=True)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="ordering_members")
    name = models.CharField(max_length=120, unique=True, help_text="container name = etcd member name")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    endpoint = models.CharField(max_length=255, blank=True, help_text="client URL as seen from the control plane")
    host_port = models.PositiveIntegerField(
        null=True, blank=True, unique=True, help_text="published client port, kept across restarts"
    )
    peer_host_port = models.PositiveIntegerField(
        null=True, blank=True, unique=True, help_text="published peer port when the members span engines"
    )
    peer_cert = models.TextField(blank=True)  # its peer TLS certificate (members spanning engines)
    peer_key_encrypted = models.TextField(blank=True)
    runtime_id = models.CharField(max_length=128, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["index"]
        constraints = [
            models.CheckConstraint(condition=models.Q(index__lt=MEMBER_COUNT), name="orderingmember_index_range")
        ]

    def __str__(self) -> str:
        return self.name


class AppOrderingCredential(TimeStamped):
    """An app's etcd user and role, confined to the app's key prefix (``/bsn/apps/<id>/``:
    the app's id, or for a user made ahead as a spare, the spare's own)."""

    # Empty: a spare user, made ahead for the next etcd app (``services.ordering_spares_fill``).
    app = models.OneToOneField(
        ChainApp, on_delete=models.CASCADE, related_name="ordering_credential", null=True, blank=True
    )
    user = models.CharField(max_length=80, unique=True)
    role = models.CharField(max_length=80, unique=True)
    password_encrypted = models.TextField()
    prefix = models.CharField(max_length=120, unique=True)
    provisioned_at = models.DateTimeField(null=True, blank=True, help_text="user and role exist in etcd")
    # A token of the user, got once by a create whose nodes are claimed from warm nodes and
    # handed to them with their claim (``ordering_app_token``): each would else authenticate
    # itself as it starts, a Raft write on every member per node.
    token_encrypted = models.TextField(blank=True, default="")
    token_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.user
