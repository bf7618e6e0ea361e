"""bsn_custody status | rotate-master: output and exit status as an operator sees them."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from apps.custody.models import TenantDataKey
from tests.api.conftest import make_app
from tests.custody.conftest import master
from tests.factories import MembershipFactory, custody_user

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("bsn_custody", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_status_and_rotation_say_what_may_be_removed(owner, regions, settings):
    k1, k2, k3 = master("k1"), master("k2"), master("k3")
    settings.BSN_CUSTODY_MASTER_KEYS = [k1]
    for index in range(3):  # three tenants with a data key each
        membership = owner if index == 0 else MembershipFactory()
        custody_user(make_app(membership, f"app{index}"), "carol")
    settings.BSN_CUSTODY_MASTER_KEYS = [k2, k1, k3]
    status, _ = run("status")
    lines = {line.split()[0]: line for line in status.splitlines()[1:]}
    assert "newest" in lines["k2"] and " 0 " in lines["k2"]
    assert "run rotate-master before removing it" in lines["k1"] and " 3 " in lines["k1"]
    assert "safe to remove" in lines["k3"]

    out, err = run("rotate-master")
    assert out.count("rewrapped  ") == 3 and out.strip().endswith("3 rewrapped, 0 already under k2, 0 failed")
    assert err == "" and set(TenantDataKey.objects.values_list("master_key_id", flat=True)) == {"k2"}
    assert "safe to remove" in run("status")[0].splitlines()[2]
    out, _ = run("rotate-master")  # nothing left to do
    assert out.strip() == "0 rewrapped, 3 already under k2, 0 failed"


def test_a_data_key_that_does_not_open_is_reported_and_left_alone(owner, regions, settings):
    k1 = master("k1")
    settings.BSN_CUSTODY_MASTER_KEYS = [k1]
    custody_user(make_app(owner, "app"), "carol")
    wrapped = bytes(TenantDataKey.objects.get().wrapped)
    settings.BSN_CUSTODY_MASTER_KEYS = [master("k2"), master("k1")]  # same id, other bytes
    with pytest.raises(CommandError):
        run("rotate-master")
    row = TenantDataKey.objects.get()
    assert row.master_key_id == "k1" and bytes(row.wrapped) == wrapped
