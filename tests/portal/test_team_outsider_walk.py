"""Every team, keys, webhooks and money route that names an object, walked as a member of
another tenant with tenant A's ids: GET and POST are the "Not found" page (or 405 for a
POST-only route's GET) and nothing changes. A new route with an id must be added here."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import URLPattern, reverse
from django.utils import timezone

from apps.billing.models import Invoice
from apps.gateway.models import AppUser
from apps.portal import urls as portal_urls
from apps.tenants.services import token_issue
from apps.webhooks import services as webhooks
from apps.webhooks.models import WebhookDelivery
from bsn.client import generate_key
from tests.api.conftest import make_app, row_counts
from tests.portal.conftest import post, signed_in
from tests.portal.pages import assert_not_found

pytestmark = pytest.mark.django_db

# Route name -> the kwargs of tenant A's object it names (filled in by the test).
ROUTES = {
    "appusers": ("app_id",),
    "appuser-revoke": ("app_id", "appuser"),
    "appuser-export": ("app_id", "appuser"),
    "webhooks": ("app_id",),
    "webhook": ("app_id", "webhook"),
    "webhook-active": ("app_id", "webhook"),
    "webhook-delete": ("app_id", "webhook"),
    "delivery-redeliver": ("app_id", "webhook", "delivery"),
    "member-role": ("member",),
    "member-remove": ("member",),
    "token-revoke": ("token",),
    "invoice": ("invoice",),
    "dcep-wallet": ("wallet",),
}
MINE = set(ROUTES) | {"team", "tokens", "dcep", "dcep-transfers", "dcep-holds", "dcep-settlements", "billing"}


def test_every_route_with_an_id_is_walked():
    named = {p.name for p in portal_urls.urlpatterns if isinstance(p, URLPattern) and p.pattern.converters}
    assert {name for name in named if name in MINE} == set(ROUTES)


def test_another_tenant_gets_not_found_everywhere_and_changes_nothing(owner, member, outsider, regions):
    app = make_app(owner, "walked")
    user = AppUser.objects.create(app=app, name="alice", public_key=generate_key()[1], status="active", mode="custody")
    webhook, _ = webhooks.webhook_create(app=app, actor=owner.user, url="https://hooks.example.com/a", events=["*"])
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, event_key=f"{app.pk}:1:0:0", height=1, tx_index=0, seq=0, event={}, status="failed"
    )
    token = token_issue(membership=member, name="walked").token
    now = timezone.now()
    invoice = Invoice.objects.create(
        tenant=owner.tenant,
        month=dt.date(2026, 10, 1),
        number="BSN-202610-acme",
        total_fen=100,
        issued_at=now,
        due_at=now,
    )
    ids = {
        "app_id": app.pk,
        "appuser": user.pk,
        "webhook": webhook.pk,
        "delivery": delivery.pk,
        "member": member.pk,
        "token": token.pk,
        "invoice": invoice.pk,
        "wallet": "1000000000000001",
    }
    client = signed_in(outsider)
    before = row_counts(), list(WebhookDelivery.objects.values_list("status", "redeliveries"))
    for name, fields in ROUTES.items():
        url = reverse(f"portal:{name}", args=[ids[f] for f in fields])
        answers = [client.get(url)]
        if name != "dcep-wallet":  # read-only
            form = {"role": "viewer", "active": "false", "name": "x", "url": "https://x.example", "events": "*"}
            answers.append(post(client, url, form))
        # A method the route does not have is 405 whatever the id (revealing nothing); the
        # one(s) it has are the "Not found" page.
        assert any(resp.status_code != 405 for resp in answers), name
        for resp in answers:
            if resp.status_code != 405:
                assert_not_found(resp)
    assert (row_counts(), list(WebhookDelivery.objects.values_list("status", "redeliveries"))) == before
