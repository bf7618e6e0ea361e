"""Platform-held app-user keys, under envelope encryption (docs/custody.md).

A tenant has one random data key (AES-256-GCM); every custodied private key of the
tenant's app users is encrypted with it. The data key itself is stored only wrapped
(encrypted) by a master key from settings (``BSN_CUSTODY_MASTER_KEYS``), and the id of
that master key is kept beside it, so a master key is rotated by rewrapping one small row
per tenant, never by re-encrypting every private key.
"""

from __future__ import annotations

import uuid

from django.db import models

from apps.common.models import TimeStamped
from apps.gateway.models import AppUser
from apps.tenants.models import Tenant


class TenantDataKey(TimeStamped):
    """A tenant's data key, wrapped by the master key ``master_key_id`` (AES-GCM, nonce first)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="custody_data_key")
    master_key_id = models.CharField(max_length=32, db_index=True)
    wrapped = models.BinaryField(help_text="12-byte nonce + AES-GCM(master key, data key)")
    rewrapped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"data key of {self.tenant_id} (master {self.master_key_id})"


class CustodyKey(TimeStamped):
    """The encrypted private key of one custody-mode app user; ``ciphertext`` is null once destroyed."""

    user = models.OneToOneField(AppUser, on_delete=models.CASCADE, primary_key=True, related_name="custody_key")
    data_key = models.ForeignKey(TenantDataKey, on_delete=models.RESTRICT, related_name="keys")
    ciphertext = models.BinaryField(null=True, help_text="12-byte nonce + AES-GCM(data key, Ed25519 seed)")
    destroyed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"custody key of {self.user_id}"
