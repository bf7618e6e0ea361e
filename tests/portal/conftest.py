"""Portal fixtures: a browser-like Django test client signed in as a member of tenant A."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory


@pytest.fixture(autouse=True)
def builtin_framework(db):
    return ensure_builtin_framework(Framework)


def signed_in(membership, *, address: str = "127.0.0.1") -> Client:
    """A client that signed in through the portal's form (CSRF checks on, as in a browser)."""
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address)
    page = client.get("/portal/login/")
    token = page.cookies["csrftoken"].value
    resp = client.post(
        "/portal/login/",
        {"username": membership.user.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert resp.status_code == 302, resp.content[:500]
    return client


def csrf(client: Client) -> str:
    return client.cookies["csrftoken"].value


def post(client: Client, url: str, data: dict | None = None, **extra):
    """A form POST as a browser sends it (with the CSRF token of the session)."""
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": csrf(client)}, **extra)


@pytest.fixture
def owner_portal(owner) -> Client:
    return signed_in(owner)


@pytest.fixture
def member_portal(member) -> Client:
    return signed_in(member)


@pytest.fixture
def outsider_portal(outsider) -> Client:
    return signed_in(outsider)
