"""Chain apps in the portal: the list, the create form, the app's page, start / stop / delete.

Same rules as the API (apps/chainapps/api/views.py): the app is looked up through
``self.scope`` (another tenant's app is the "Not found" page), the create form is
validated by ``AppCreateInputSerializer`` and every write calls the service the API calls
(``chainapp_create``, ``chainapp_start``, ``chainapp_stop``, ``chainapp_delete``), which
audit it. A refusal of a service (DRF's ValidationError or Conflict, or a DomainError) is
shown on the form with the user's input kept.
"""

from __future__ import annotations

import inspect
import json
import sys

from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework.exceptions import APIException, ValidationError

from apps.chainapps import services
from apps.chainapps.api.serializers import AppCreateInputSerializer
from apps.chainapps.models import ChainApp, Framework, LedgerNode, Operation
from apps.chainapps.selectors import app_nodes, app_open_operation, regions_with_load
from apps.common.errors import DomainError
from apps.metering.selectors import app_usage, usage_range
from apps.portal import charts
from apps.portal.views.base import PortalView, serializer_errors
from apps.portal.views.forms import refusal as service_refusal
from apps.portal.views.ledger import ledger_summary
from apps.regions.models import Region
from apps.tenants.models import Role, Tenant
from bsn.ledger.contracts import CONTRACTS


def refusal(exc: Exception) -> tuple[int, dict[str, list[str]]]:
    """A service's refusal as ``(status, {field: [messages]})`` for a form to show: a
    serializer's errors per field, any other refusal's message above the form."""
    status, message, errors = service_refusal(exc)
    return status, errors if isinstance(exc, ValidationError) else {"non_field_errors": [message]}


class AppMixin:
    """The app of the URL, in the tenant's scope (a deleted app is still shown)."""

    def get_app(self, pk) -> ChainApp:
        return get_object_or_404(self.scope(ChainApp.objects.select_related("framework", "tenant")), pk=pk)


# --------------------------------------------------------------------------- list


class AppListView(PortalView):
    section = "apps"

    def get(self, request):
        live = LedgerNode.objects.exclude(state=LedgerNode.State.REMOVED).select_related("region").order_by("region")
        apps = (
            self.scope(ChainApp.objects.filter(deleted_at__isnull=True))
            .select_related("framework")
            .prefetch_related(Prefetch("nodes", queryset=live))
            .order_by("name")
        )
        return self.render("portal/apps/list.html", {"apps": apps})


# --------------------------------------------------------------------------- create


def _template_help(name: str) -> str:
    """The first paragraph of the contract module's docstring (it names its params)."""
    module = sys.modules.get(CONTRACTS[name].__module__)
    doc = inspect.getdoc(module) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "")


class AppCreateView(PortalView):
    section = "apps"
    read_role = Role.DEVELOPER  # the form is only for those who may send it

    FIELDS = ("name", "description", "framework", "contract_template", "tps_quota", "storage_mb")

    def _context(self, values: dict, errors: dict | None = None) -> dict:
        platform = self.tenant.kind == Tenant.Kind.PLATFORM
        templates = [
            {"name": name, "help": _template_help(name)}
            for name, cls in CONTRACTS.items()
            if platform or not cls.platform_only
        ]
        regions = []
        for region in regions_with_load():
            free = max(0, region.max_nodes - region.node_count)
            regions.append(
                {
                    "region": region,
                    "free": free,
                    "open": region.status == Region.Status.ACTIVE and free > 0,
                    "checked": region.code in values.get("regions", []),
                }
            )
        return {
            "values": values,
            "errors": errors or {},
            "frameworks": Framework.objects.filter(is_active=True).order_by("slug"),
            "templates": templates,
            "regions": regions,
        }

    def get(self, request):
        fields = AppCreateInputSerializer().fields  # the API's defaults, not a copy of them
        values = {name: str(fields[name].default) for name in ("framework", "contract_template", "tps_quota")}
        values.update(storage_mb=str(fields["storage_mb"].default), contract_params="{}", regions=[])
        return self.render("portal/apps/new.html", self._context(values))

    def post(self, request):
        values = {name: request.POST.get(name, "").strip() for name in self.FIELDS}
        values["regions"] = request.POST.getlist("regions")
        values["contract_params"] = request.POST.get("contract_params", "").strip()
        data = {k: v for k, v in values.items() if k != "contract_params" and v not in ("", [])}
        data["regions"] = values["regions"]  # an empty choice is the serializer's "choose one" message
        errors: dict[str, list[str]] = {}
        try:
            params = json.loads(values["contract_params"] or "{}")
        except json.JSONDecodeError as exc:
            errors["contract_params"] = [f"not valid JSON ({exc.msg} at character {exc.pos})"]
        except RecursionError:
            errors["contract_params"] = ["nested too deeply"]
        else:
            data["contract_params"] = params
        serializer = AppCreateInputSerializer(data=data)
        if not serializer.is_valid():
            errors = {**serializer_errors(ValidationError(serializer.errors)), **errors}
        if errors:
            return self.render("portal/apps/new.html", self._context(values, errors), status=400)
        spec = services.ChainAppSpec(**serializer.validated_data)
        try:
            operation = services.chainapp_create(tenant=self.tenant, actor=request.user, spec=spec, request=request)
        except (ValidationError, APIException, DomainError) as exc:
            status, errors = refusal(exc)
            return self.render("portal/apps/new.html", self._context(values, errors), status=status)
        messages.success(request, f"App {spec.name} is being created: this page follows its provisioning.")
        return HttpResponseRedirect(reverse("portal:operation", args=[operation.pk]))


# --------------------------------------------------------------------------- the app's page


def usage_charts(app: ChainApp) -> list[dict]:
    """The last 24 hours of the app's usage (what GET /apps/{id}/usage answers) as SVG."""
    data = app_usage(app=app, rng=usage_range(start=None, end=None, step="hour"))
    buckets = data["buckets"]

    def series(key: str, divide: int = 1, *, level: bool = False) -> list[charts.Point]:
        # A level (storage) of 0 is an hour without a reading: a gap, not a fall to zero.
        return [
            charts.Point(b["start"].strftime("%H:%M"), None if level and not b[key] else b[key] // divide)
            for b in buckets
        ]

    totals = data["totals"]
    return [
        {
            "title": "Transactions committed per hour",
            "total": f"{totals['tx_committed']:,} committed, {totals['tx_rejected']:,} rejected, "
            f"{totals['tx_failed']:,} failed",
            "svg": charts.bar_chart(series("tx_committed"), title="Transactions committed per hour", unit="tx"),
        },
        {
            "title": "Data sent to the app per hour",
            "total": f"{totals['bytes_in'] // 1024:,} KiB in, {totals['bytes_out'] // 1024:,} KiB out",
            "svg": charts.bar_chart(series("bytes_in", 1024), title="Data sent to the app per hour", unit="KiB"),
        },
        {
            "title": "Storage",
            "total": f"peak {totals['storage_bytes'] // 1024:,} KiB of {app.storage_mb:,} MB",
            "svg": charts.line_chart(
                series("storage_bytes", 1024, level=True), title="Storage over the last day", unit="KiB"
            ),
        },
    ]


class AppDetailView(AppMixin, PortalView):
    section = "apps"

    def get(self, request, pk):
        app = self.get_app(pk)
        nodes = list(app_nodes(app=app))
        if app.deleted_at is None:
            nodes = [n for n in nodes if n.state != LedgerNode.State.REMOVED]
        services.node_facts_refresh_if_old(nodes)  # as the API's nodes action: fresh facts within seconds
        operations = list(Operation.objects.filter(app=app).order_by("-created_at")[:5])
        alive = app.deleted_at is None
        return self.render(
            "portal/apps/detail.html",
            {
                "app": app,
                "nodes": nodes,
                "operations": operations,
                "open_operation": app_open_operation(app=app),
                "ledger": ledger_summary(app) if alive else None,
                "charts": usage_charts(app),
                "alive": alive,
                "can_start": alive and app.desired_state == ChainApp.DesiredState.STOPPED,
                "can_stop": alive and app.desired_state == ChainApp.DesiredState.RUNNING,
            },
        )


# --------------------------------------------------------------------------- start / stop / delete


class AppLifecycleView(AppMixin, PortalView):
    """GET: a confirmation page; POST: the service, then the operation's page."""

    section = "apps"
    read_role = Role.DEVELOPER  # the confirmation page is only for those who may confirm
    action = ""  # start | stop | delete

    def _page(self, app, *, errors=None, status: int = 200, typed: str = "", keep_data: bool = True):
        return self.render(
            "portal/apps/confirm.html",
            {"app": app, "action": self.action, "errors": errors or {}, "typed": typed, "keep_data": keep_data},
            status=status,
        )

    def get(self, request, pk):
        return self._page(self.get_app(pk))

    def post(self, request, pk):
        app = self.get_app(pk)
        keep_data = True
        if self.action == "delete":
            typed = request.POST.get("confirm_name", "")
            keep_data = request.POST.get("keep_data") == "on"
            if typed != app.name:
                errors = {"confirm_name": [f"type the app's name, {app.name}, exactly to delete it"]}
                return self._page(app, errors=errors, status=400, typed=typed, keep_data=keep_data)
        try:
            if self.action == "start":
                operation = services.chainapp_start(app=app, actor=request.user, request=request)
            elif self.action == "stop":
                operation = services.chainapp_stop(app=app, actor=request.user, request=request)
            else:
                operation = services.chainapp_delete(app=app, actor=request.user, keep_data=keep_data, request=request)
        except (APIException, DomainError) as exc:
            status, errors = refusal(exc)
            return self._page(app, errors=errors, status=status, keep_data=keep_data)
        messages.success(request, f"{self.action.capitalize()} of {app.name} requested.")
        return HttpResponseRedirect(reverse("portal:operation", args=[operation.pk]))
