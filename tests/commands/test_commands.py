"""Operator commands: output, effects, and one-line errors with a non-zero exit."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from apps.chainapps.models import ChainApp, LedgerNode
from apps.regions.models import Region
from apps.tenants.models import ApiToken, Membership, Tenant, token_digest
from tests.factories import MembershipFactory, TenantFactory

ROOT = Path(__file__).resolve().parents[2]


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_bsn_demo_seeds_regions_tenant_and_prints_a_working_token(client):
    output = run("bsn_demo", "--driver", "process")
    assert set(Region.objects.values_list("code", flat=True)) >= {"cn-beijing", "cn-shanghai", "cn-guangzhou"}
    assert Membership.objects.filter(tenant__slug="demo", user__username="demo", role="owner").exists()
    token = next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("API token"))
    assert ApiToken.objects.filter(digest=token_digest(token)).exists()
    resp = client.get("/api/v1/tenant", HTTP_AUTHORIZATION=f"Token {token}")
    assert resp.status_code == 200 and resp.json()["slug"] == "demo"
    password = next(line.split(" / ")[1] for line in output.splitlines() if line.startswith("tenant login"))
    login = client.post(
        "/api/v1/auth/login", {"username": "demo", "password": password}, content_type="application/json"
    )
    assert login.status_code == 201
    run("bsn_demo", "--driver", "process")  # idempotent: runs again without error
    assert Tenant.objects.filter(slug="demo").count() == 1


def _logins(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith(("operator login", "tenant login")) and " / " in line:
            user, password = line.split(": ", 1)[1].split(" / ")
            found[user] = password
        elif line.startswith("API token: "):
            found["token"] = line.split(": ", 1)[1]
    return found


@pytest.mark.django_db
def test_bsn_demo_second_run_keeps_the_logins_and_the_token(client, tmp_path):
    login_file = tmp_path / "demo-login.txt"
    login_file.write_text("left by an old run\n")
    login_file.chmod(0o644)  # an old run's world-readable file
    first = _logins(run("bsn_demo", "--driver", "process", "--login-file", str(login_file)))
    assert set(first) == {"admin", "demo", "token"}
    assert first["admin"] != first["demo"], "the operator and the tenant owner never share a password"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    resp = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": first["admin"]})
    assert resp.status_code == 302, "the operator logs in to the Django admin"

    output = run("bsn_demo", "--driver", "process", "--login-file", str(login_file))
    assert _logins(output) == first, "a second run prints the same logins and reuses the token"
    assert "changepassword admin" in output
    assert ApiToken.objects.filter(name="demo").count() == 1, "no pile of demo tokens"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600

    # The operator changed the password: it is not printed (nor reset); the way to reset is.
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("chosen-by-the-operator")
    admin.save()
    ApiToken.objects.filter(name="demo").update(revoked_at=timezone.now())
    output = run("bsn_demo", "--driver", "process", "--login-file", str(login_file))
    third = _logins(output)
    assert "admin" not in third and "manage.py changepassword admin" in output
    assert third["demo"] == first["demo"] and third["token"] != first["token"]
    assert ApiToken.objects.usable().filter(name="demo").count() == 1
    assert client.get("/api/v1/tenant", HTTP_AUTHORIZATION=f"Token {third['token']}").status_code == 200
    assert get_user_model().objects.get(username="admin").check_password("chosen-by-the-operator")
    with pytest.raises(CommandError, match="--username"):
        run("bsn_demo", "--driver", "process", "--username", "\u0430dmin")  # Cyrillic а


@pytest.mark.django_db
def test_bsn_region_add_list_drain_enable():
    assert "added region cn-hangzhou" in run("bsn_region", "add", "cn-hangzhou", "--driver", "process", "--city", "H")
    assert "cn-hangzhou" in run("bsn_region", "list")
    run("bsn_region", "drain", "cn-hangzhou")
    assert Region.objects.get(code="cn-hangzhou").status == "draining"
    run("bsn_region", "enable", "cn-hangzhou")
    assert Region.objects.get(code="cn-hangzhou").status == "active"
    with pytest.raises(CommandError, match="already exists"):
        run("bsn_region", "add", "cn-hangzhou")
    with pytest.raises(CommandError, match="no region"):
        run("bsn_region", "drain", "nowhere")
    with pytest.raises(CommandError, match="code"):
        run("bsn_region", "add", "Bad Code!")


@pytest.mark.django_db
def test_bsn_region_warm_sets_the_count_and_asks_the_region_worker(django_capture_on_commit_callbacks):
    from unittest import mock

    run("bsn_region", "add", "cn-warm")
    with mock.patch("apps.chainapps.tasks.warm_fill_task.apply_async") as sent:
        with django_capture_on_commit_callbacks(execute=True):
            assert "keeps 2 warm node(s)" in run("bsn_region", "warm", "cn-warm", "2")
    assert Region.objects.get(code="cn-warm").warm_nodes == 2
    assert sent.call_args.args == (("cn-warm",),) and sent.call_args.kwargs["queue"] == "region.cn-warm"
    assert "0/2" in run("bsn_region", "list")  # none ready yet: the worker makes them
    with pytest.raises(CommandError, match="Docker regions only"):
        run("bsn_region", "add", "cn-proc", "--driver", "process", "--warm-nodes", "1")
    with pytest.raises(CommandError, match="less than or equal to 50"):
        run("bsn_region", "warm", "cn-warm", "51")
    with pytest.raises(CommandError, match="no region"):
        run("bsn_region", "warm", "nowhere", "1")
    assert Region.objects.get(code="cn-warm").warm_nodes == 2


@pytest.mark.django_db
def test_bsn_tenant_create_list_quota():
    run("bsn_tenant", "create", "acme", "--name", "Acme", "--owner", "wile", "--password", "a-long-pass-phrase-42")
    assert Membership.objects.get(tenant__slug="acme", user__username="wile").role == "owner"
    assert "acme" in run("bsn_tenant", "list")
    assert "apps 3" in run("bsn_tenant", "quota", "acme", "--max-apps", "3")
    assert Tenant.objects.get(slug="acme").max_apps == 3
    with pytest.raises(CommandError, match="already exists"):
        run("bsn_tenant", "create", "acme")
    with pytest.raises(CommandError, match="no tenant"):
        run("bsn_tenant", "quota", "nope", "--max-apps", "1")
    with pytest.raises(CommandError, match="non-negative"):
        run("bsn_tenant", "quota", "acme", "--max-apps", "-1")
    with pytest.raises(CommandError, match="slug"):
        run("bsn_tenant", "create", "Not A Slug")
    with pytest.raises(CommandError, match="--password"):
        run("bsn_tenant", "create", "other", "--owner", "ghost")
    assert not Tenant.objects.filter(slug="other").exists(), "a failed create leaves nothing behind"


@pytest.mark.django_db
def test_bsn_token_create_prints_secret_once():
    membership = MembershipFactory(tenant=TenantFactory(slug="t1"), user__username="carol")
    secret = run("bsn_token", "create", "carol").strip()
    token = ApiToken.objects.get(digest=token_digest(secret))
    assert token.membership == membership
    assert secret not in str(token.__dict__), "only the digest is stored"
    with pytest.raises(CommandError, match="not a member"):
        run("bsn_token", "create", "nobody")


@pytest.mark.django_db
def test_bsn_status_shows_regions_apps_and_operations(owner_client, regions):
    owner_client.post("/api/v1/apps", {"name": "shown", "regions": ["cn-beijing"]}, format="json")
    output = run("bsn_status")
    assert "cn-beijing" in output and "acme/shown" in output
    assert ChainApp.objects.filter(name="shown").exists()
    # Per region: nodes wanted running, observed running, the drift, what the engine last said.
    row = next(line for line in output.splitlines() if line.strip().startswith("cn-beijing"))
    fields = row.split()
    assert fields[1] == "active" and fields[4:7] == ["1", "0", "1"], row  # wanted 1, running 0: drift 1
    LedgerNode.objects.filter(app__name="shown").update(state=LedgerNode.State.RUNNING)
    Region.objects.filter(code="cn-beijing").update(status=Region.Status.UNAVAILABLE, last_error="engine gone\ndetail")
    row = next(line for line in run("bsn_status").splitlines() if line.strip().startswith("cn-beijing"))
    assert row.split()[1] == "unavailable" and row.split()[4:7] == ["1", "1", "0"] and row.endswith("engine gone"), row
    assert row.split()[7] == "-"  # no warm nodes wanted
    Region.objects.filter(code="cn-beijing").update(warm_nodes=2)
    row = next(line for line in run("bsn_status").splitlines() if line.strip().startswith("cn-beijing"))
    assert row.split()[7] == "0/2", row  # warm nodes ready / wanted


def test_command_errors_are_one_line_and_non_zero(tmp_path):
    """Through the real manage.py (embedded SQLite settings): one clear line on stderr, exit 1."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="bsn.settings", BSN_DATA_DIR=str(tmp_path))

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
        )

    assert manage("migrate", "-v", "0").returncode == 0
    result = manage("bsn_region", "drain", "no-such-region")
    assert result.returncode == 1
    assert result.stderr.strip() == "CommandError: no region no-such-region"


# --------------------------------------------------------------------------- bsn_reconcile


def test_reconcile_runs_a_pass_now_and_says_what_it_did(db, tmp_path):
    Region.objects.create(code="rc-proc", name="procs", driver=Region.Driver.PROCESS)
    Region.objects.create(
        code="rc-gone", name="gone", driver=Region.Driver.DOCKER, docker_base_url=f"unix://{tmp_path}/no-engine.sock"
    )
    out = run("bsn_reconcile", "--region", "rc-proc")
    assert "observed" in out and "restarted" in out
    row = next(line for line in out.splitlines() if line.startswith("rc-proc"))
    assert row.split()[1:] == ["0", "0", "0", "0", "0", "ok"]
    assert "dry run" in run("bsn_reconcile", "--region", "rc-proc", "--dry-run")

    with pytest.raises(CommandError, match="could not be reconciled: rc-gone"):
        run("bsn_reconcile", "--region", "rc-proc", "--region", "rc-gone")
    assert Region.objects.get(code="rc-gone").status == Region.Status.UNAVAILABLE  # what the pass found
    with pytest.raises(CommandError, match="unknown region"):
        run("bsn_reconcile", "--region", "nowhere")
