"""Node regions ("city nodes"), each one runtime engine with its own worker queue."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models

from apps.common.crypto import decrypt_secret, encrypt_secret
from apps.common.models import TimeStamped
from apps.regions.engine_tls import EngineTLS

region_code_validator = RegexValidator(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$", "lower-case letters, digits and dashes")


class RegionQuerySet(models.QuerySet):
    def accepting(self) -> RegionQuerySet:
        return self.filter(status=Region.Status.ACTIVE)


class Region(TimeStamped):
    """A node region: one Docker engine, one Docker Swarm (or local process host) and its capacity."""

    class Driver(models.TextChoices):
        DOCKER = "docker"
        PROCESS = "process"
        SWARM = "swarm"

    class PublishMode(models.TextChoices):
        HOST = "host", "host port on the task's host (sticky per node)"
        INGRESS = "ingress", "Swarm routing mesh (every host of the swarm)"

    class Status(models.TextChoices):
        ACTIVE = "active"
        DRAINING = "draining"
        UNAVAILABLE = "unavailable"

    code = models.CharField(max_length=32, unique=True, validators=[region_code_validator])
    name = models.CharField(max_length=100)
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    operator = models.CharField(max_length=100, blank=True)
    driver = models.CharField(max_length=16, choices=Driver.choices, default=Driver.DOCKER)
    docker_base_url = models.CharField(max_length=255, blank=True, help_text="blank: the local engine")
    # TLS to a remote engine (apps/regions/engine_tls.py): PEM texts, only encrypted here.
    tls_ca_encrypted = models.TextField(blank=True)
    tls_cert_encrypted = models.TextField(blank=True)
    tls_key_encrypted = models.TextField(blank=True)
    publish_host = models.CharField(max_length=255, default="127.0.0.1")
    # Swarm regions only (apps/runtime/swarm.py): how a node's port is published.
    publish_mode = models.CharField(max_length=8, choices=PublishMode.choices, default=PublishMode.HOST)
    # Swarm regions only: IPsec on the overlay networks between hosts. Off only where the
    # hosts' network is private already, or their kernel has no ESP (then an encrypted
    # overlay drops every packet between hosts: docs/runtime-drivers.md).
    overlay_encryption = models.BooleanField(default=True)
    max_nodes = models.PositiveIntegerField(default=100)
    # Ledger containers kept started and waiting for an app, per active built-in framework
    # (Docker regions; docs/provisioning.md "Warm nodes"). 0: every node is made on demand.
    warm_nodes = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(50)],
        help_text="ledger containers kept started for new apps, per built-in framework (Docker regions)",
    )
    cpu_capacity = models.FloatField(default=2.0, help_text="CPUs available for nodes")
    memory_capacity_mb = models.PositiveIntegerField(default=4096)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The last engine event a worker acted on (apps/chainapps/healing.py), e.g.
    # "destroy bsn-…-cn-beijing: healed"; shown by bsn_status.
    last_event = models.CharField(max_length=300, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    # The end of the running reconcile pass's lease (apps/common/leases.py): one pass a region
    # at a time, whichever worker or command runs it.
    reconcile_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    warm_fill_lease_until = models.DateTimeField(null=True, blank=True, editable=False)  # warm_fill_task

    objects = RegionQuerySet.as_manager()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def tls(self) -> EngineTLS | None:
        """The engine's TLS material, decrypted (None: a local socket or ssh)."""
        if not (self.tls_ca_encrypted or self.tls_cert_encrypted or self.tls_key_encrypted):
            return None
        return EngineTLS(
            ca=decrypt_secret(self.tls_ca_encrypted),
            cert=decrypt_secret(self.tls_cert_encrypted),
            key=decrypt_secret(self.tls_key_encrypted),
        )

    def set_tls(self, tls: EngineTLS | None) -> None:
        self.tls_ca_encrypted = encrypt_secret(tls.ca) if tls else ""
        self.tls_cert_encrypted = encrypt_secret(tls.cert) if tls else ""
        self.tls_key_encrypted = encrypt_secret(tls.key) if tls else ""

    def clean(self) -> None:
        super().clean()
        if self.warm_nodes:
            from apps.runtime.base import WarmNodes, supports
            from apps.runtime.drivers import driver_class

            if not supports(driver_class(self.driver), WarmNodes):  # the Docker driver's alone
                raise ValidationError({"warm_nodes": "warm nodes are kept on Docker regions only"})

    @property
    def queue(self) -> str:
        """Celery queue whose workers can reach this region's engine."""
        return f"region.{self.code}"
