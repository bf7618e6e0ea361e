"""Console fixtures: a staff superuser's Django test client, apps in known states, Celery sends recorded."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from apps.chainapps import tasks
from tests.api.conftest import builtin_framework, finish_open_operations, make_app  # noqa: F401 - fixture re-used
from tests.dcep.conftest import home_region, institutions, tier1  # noqa: F401 - DCEP fixtures re-used
from tests.factories import UserFactory


@pytest.fixture
def operator(db):
    return UserFactory(username="ops", is_staff=True, is_superuser=True)


@pytest.fixture
def console(operator) -> Client:
    """The operator, logged in to the admin with a session (as in a browser), CSRF checks on."""
    client = Client(enforce_csrf_checks=False)
    client.force_login(operator)
    return client


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()  # locmem in tests: the dashboard's remembered audit check starts empty
    yield
    cache.clear()


@pytest.fixture
def sent(monkeypatch):
    """Celery sends, recorded instead of made: (task name, args, queue)."""
    calls = []
    for task in (tasks.node_restart, tasks.reconcile_region):
        monkeypatch.setattr(
            task, "apply_async", lambda args, queue=None, task=task, **kw: calls.append((task.name, args, queue))
        )
    return calls


@pytest.fixture
def running_app(owner, regions):
    """Tenant A's app on two regions, provision finished."""
    app = make_app(owner, "ledger-a", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    return app


def change_form_data(client, url: str, **changes) -> dict:
    """What a browser would post from the change page at ``url``: the form's current values
    (its editable fields only) and the inlines' management forms, then ``changes``."""
    resp = client.get(url)
    assert resp.status_code == 200, url
    form = resp.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        data[name] = "" if value is None else value
    for inline in resp.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
    data.update(changes)
    return data
