"""An app's webhooks and their delivery log (``/portal/apps/<app id>/webhooks/``).

As ``WebhookViewSet``/``DeliveryViewSet``: viewers read, developers create, pause, resume,
delete and redeliver, through ``apps.webhooks.services`` (which audit, and refuse private
addresses). Input is checked by the API's ``WebhookCreateInputSerializer`` and
``WebhookUpdateInputSerializer``. The signing secret is on the answer to the creating POST
only (no-store): the platform keeps it encrypted and never shows it again.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework.exceptions import APIException

from apps.common.errors import DomainError
from apps.portal.views.appusers import AppPage
from apps.portal.views.base import error_page
from apps.portal.views.forms import (
    already_sent,
    form_id,
    mark_sent,
    no_store,
    page_of,
    parse_uuid,
    posted,
    validated,
)
from apps.tenants.models import Role
from apps.webhooks import services
from apps.webhooks.api.serializers import WebhookCreateInputSerializer, WebhookUpdateInputSerializer
from apps.webhooks.models import Webhook, WebhookDelivery

STATUSES = [value for value, _ in WebhookDelivery.Status.choices]


class WebhookPage(AppPage):
    def back_url(self) -> str:
        if "pk" in self.kwargs:
            return reverse("portal:webhook", args=[self.kwargs["app_id"], self.kwargs["pk"]])
        return reverse("portal:webhooks", args=[self.kwargs["app_id"]])

    def webhook(self, app, pk) -> Webhook:
        hooks = self.scope(Webhook.objects.select_related("app__tenant"), "app__tenant").filter(app=app)
        return get_object_or_404(hooks, pk=parse_uuid(pk))


class WebhooksView(WebhookPage):
    def context(self, app) -> dict:
        hooks = self.scope(Webhook.objects.select_related("created_by"), "app__tenant").filter(app=app)
        return {"app": app, "webhooks": hooks.order_by("created_at"), "form": {"events": "*"}, "form_id": form_id()}

    def get(self, request, app_id):
        return self.render("portal/webhooks/list.html", self.context(self.app(app_id)))

    def post(self, request, app_id):
        app = self.app(app_id)
        if already_sent(request):
            return error_page(
                request,
                409,
                "This webhook was already added",
                "This form was sent before and its webhook added; its signing secret was shown once, on that "
                "answer. If you did not copy it, delete that webhook and add another.",
                action=("Back to the webhooks", reverse("portal:webhooks", args=[app.pk])),
            )
        data = posted(request, ("url", "events"), lists=("events",))
        form = {"url": data.get("url", ""), "events": " ".join(data.get("events", []))}
        try:
            values = validated(WebhookCreateInputSerializer, data)
            webhook, secret = services.webhook_create(app=app, actor=request.user, request=request, **values)
        except (APIException, DomainError) as exc:
            return self.form_error("portal/webhooks/list.html", {**self.context(app), "form": form}, exc)
        mark_sent(request)
        page = self.render("portal/webhooks/created.html", {"app": app, "webhook": webhook, "secret": secret})
        return no_store(page)


class WebhookView(WebhookPage):
    """One webhook and its delivery log, newest event first, with status codes and attempts."""

    def get(self, request, app_id, pk):
        app = self.app(app_id)
        webhook = self.webhook(app, pk)
        deliveries = webhook.deliveries.order_by("-height", "-tx_index", "-seq")
        status = request.GET.get("status", "")
        if status in STATUSES:
            deliveries = deliveries.filter(status=status)
        page = page_of(request, deliveries)
        return self.render(
            "portal/webhooks/detail.html",
            {
                "app": app,
                "webhook": webhook,
                "deliveries": page,
                # htmx refreshes the log while a delivery on it is pending (its attempts change by themselves).
                "live": any(d.status == WebhookDelivery.Status.PENDING for d in page),
                "status": status,
                "statuses": STATUSES,
            },
        )


class WebhookActiveView(WebhookPage):
    """Pause (nothing is sent, new events are not queued) or resume a webhook."""

    def post(self, request, app_id, pk):
        app = self.app(app_id)
        webhook = self.webhook(app, pk)
        values = validated(WebhookUpdateInputSerializer, posted(request, ("active",)))
        webhook = services.webhook_update(webhook=webhook, actor=request.user, changes=dict(values), request=request)
        state = "receives events again (from now on)" if webhook.active else "is paused: nothing is sent to it"
        messages.success(request, f"The webhook to {webhook.url} {state}.")
        return HttpResponseRedirect(reverse("portal:webhook", args=[app.pk, webhook.pk]))


class WebhookDeleteView(WebhookPage):
    read_role = Role.DEVELOPER  # the confirmation is only shown to someone who may delete

    def get(self, request, app_id, pk):
        app = self.app(app_id)
        webhook = self.webhook(app, pk)
        return self.render(
            "portal/team/confirm.html",
            {
                "app": app,
                "title": f"Delete the webhook to {webhook.url}?",
                "detail": "Nothing more is sent to it and its delivery log is removed. To stop it for a while "
                "instead, pause it.",
                "button": "Delete webhook",
                "cancel": reverse("portal:webhook", args=[app.pk, webhook.pk]),
            },
        )

    def post(self, request, app_id, pk):
        app = self.app(app_id)
        webhook = self.webhook(app, pk)
        url = webhook.url
        services.webhook_delete(webhook=webhook, actor=request.user, request=request)
        messages.success(request, f"The webhook to {url} is deleted.")
        return HttpResponseRedirect(reverse("portal:webhooks", args=[app.pk]))


class DeliveryRedeliverView(WebhookPage):
    """Send a finished delivery again (``delivery_redeliver``)."""

    def post(self, request, app_id, pk, delivery_id):
        app = self.app(app_id)
        webhook = self.webhook(app, pk)
        delivery = get_object_or_404(webhook.deliveries.all(), pk=parse_uuid(delivery_id))
        services.delivery_redeliver(delivery=delivery, actor=request.user, request=request)
        messages.success(request, f"Event {delivery.event_key} is queued to be sent again.")
        return HttpResponseRedirect(reverse("portal:webhook", args=[app.pk, webhook.pk]))
