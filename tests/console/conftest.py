"""Console fixtures: a staff superuser's Django test client, apps in known states, Celery sends recorded."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from apps.chainapps import tasks
from tests.api.conftest import builtin_framework, finish_open_operations, make_app  # noqa: F401 - fixture re-used
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
