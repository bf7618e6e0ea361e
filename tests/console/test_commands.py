"""The commands and the console share the services: the same audit events either way."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.regions.models import Region
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_bsn_region_drain_enable_through_region_set_status(regions):
    assert "region cn-beijing is now draining" in run("bsn_region", "drain", "cn-beijing")
    event = AuditEvent.objects.filter(action="region.draining").latest("sequence")
    assert (event.actor_label, event.object_id, event.data) == ("manage.py", "cn-beijing", {"before": "active"})
    run("bsn_region", "enable", "cn-beijing")
    assert Region.objects.get(code="cn-beijing").status == "active"
    with pytest.raises(CommandError, match="no region nowhere"):
        run("bsn_region", "drain", "nowhere")


def test_bsn_tenant_deactivate_activate(owner):
    assert "acme is now inactive" in run("bsn_tenant", "deactivate", "acme")
    assert Tenant.objects.get(slug="acme").is_active is False
    assert AuditEvent.objects.filter(action="tenant.deactivate", object_id=str(owner.tenant.pk)).count() == 1
    run("bsn_tenant", "deactivate", "acme")  # already inactive: nothing changes, nothing audited
    assert AuditEvent.objects.filter(action="tenant.deactivate").count() == 1
    run("bsn_tenant", "activate", "acme")
    assert Tenant.objects.get(slug="acme").is_active is True
    with pytest.raises(CommandError, match="no tenant nobody"):
        run("bsn_tenant", "activate", "nobody")
