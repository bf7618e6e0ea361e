"""Changing a running app from the portal: upgrade its framework, scale its regions, and
cancel an operation that has not finished — the API's ``POST /apps/{id}/upgrade``,
``POST /apps/{id}/scale`` and ``POST /operations/{id}/cancel`` as pages.

Same rules as the API (apps/chainapps/api/views.py): the app or operation is looked up
through ``self.scope`` (another tenant's is the "Not found" page), inputs are validated by
the API's ``AppUpgradeInputSerializer`` / ``AppScaleInputSerializer`` and the write is the
service the API calls (``chainapp_upgrade``, ``chainapp_scale``, ``operation_cancel``),
which audits it. GET shows a confirmation form; a refusal re-renders it with the reason.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework.exceptions import APIException, ValidationError

from apps.chainapps import services
from apps.chainapps.api.serializers import AppScaleInputSerializer, AppUpgradeInputSerializer
from apps.chainapps.models import Framework, LedgerNode, Operation
from apps.chainapps.selectors import regions_with_load
from apps.common.errors import DomainError
from apps.portal.views.apps import AppMixin, refusal
from apps.portal.views.base import PortalView, serializer_errors
from apps.regions.models import Region
from apps.tenants.models import Role

REFUSALS = (ValidationError, APIException, DomainError)


class AppUpgradeView(AppMixin, PortalView):
    """GET: the versions of the app's framework family to move to; POST: ``chainapp_upgrade``."""

    section = "apps"
    read_role = Role.DEVELOPER  # the form is only for those who may send it

    def _page(self, app, *, framework: str = "", errors=None, status: int = 200):
        # The family is the framework's name (Framework.upgrade_refusal); the service decides.
        versions = Framework.objects.filter(is_active=True, name=app.framework.name).order_by("version")
        return self.render(
            "portal/apps/upgrade.html",
            {"app": app, "versions": versions, "framework": framework, "errors": errors or {}},
            status=status,
        )

    def get(self, request, pk):
        return self._page(self.get_app(pk))

    def post(self, request, pk):
        app = self.get_app(pk)
        framework = request.POST.get("framework", "").strip()
        data = AppUpgradeInputSerializer(data={"framework": framework})
        if not data.is_valid():
            return self._page(
                app, framework=framework, errors=serializer_errors(ValidationError(data.errors)), status=400
            )
        try:
            operation = services.chainapp_upgrade(
                app=app, actor=request.user, framework=data.validated_data["framework"], request=request
            )
        except REFUSALS as exc:
            status, errors = refusal(exc)
            return self._page(app, framework=framework, errors=errors, status=status)
        messages.success(request, f"Upgrade of {app.name} to {framework} requested: one node at a time.")
        return HttpResponseRedirect(reverse("portal:operation", args=[operation.pk]))


class AppScaleView(AppMixin, PortalView):
    """GET: the regions with their free capacity, the app's current ones ticked; POST: ``chainapp_scale``."""

    section = "apps"
    read_role = Role.DEVELOPER

    def _page(self, app, *, chosen: list[str] | None = None, keep_data: bool = True, errors=None, status: int = 200):
        current = set(app.nodes.exclude(state=LedgerNode.State.REMOVED).values_list("region__code", flat=True))
        chosen_set = current if chosen is None else set(chosen)
        regions = []
        for region in regions_with_load():
            free = max(0, region.max_nodes - region.node_count)
            here = region.code in current
            regions.append(
                {
                    "region": region,
                    "free": free,
                    "current": here,
                    # a region the app is already on can always be kept (or dropped)
                    "open": here or (region.status == Region.Status.ACTIVE and free > 0),
                    "checked": region.code in chosen_set,
                }
            )
        context = {"app": app, "regions": regions, "keep_data": keep_data, "errors": errors or {}}
        return self.render("portal/apps/scale.html", context, status=status)

    def get(self, request, pk):
        return self._page(self.get_app(pk))

    def post(self, request, pk):
        app = self.get_app(pk)
        chosen = request.POST.getlist("regions")
        keep_data = request.POST.get("keep_data") == "on"
        data = AppScaleInputSerializer(data={"regions": chosen, "keep_data": keep_data})
        if not data.is_valid():
            errors = serializer_errors(ValidationError(data.errors))
            return self._page(app, chosen=chosen, keep_data=keep_data, errors=errors, status=400)
        try:
            operation = services.chainapp_scale(app=app, actor=request.user, **data.validated_data, request=request)
        except REFUSALS as exc:
            status, errors = refusal(exc)
            return self._page(app, chosen=chosen, keep_data=keep_data, errors=errors, status=status)
        messages.success(request, f"{app.name} is moving to {', '.join(sorted(chosen))}.")
        return HttpResponseRedirect(reverse("portal:operation", args=[operation.pk]))


class OperationCancelView(PortalView):
    """GET: a confirmation; POST: ``operation_cancel`` (a finished one or a delete is refused)."""

    section = "apps"
    read_role = Role.DEVELOPER

    def get_operation(self, pk) -> Operation:
        return get_object_or_404(self.scope(Operation.objects.select_related("app")), pk=pk)

    def _page(self, op, *, errors=None, status: int = 200):
        return self.render("portal/operations/cancel.html", {"op": op, "errors": errors or {}}, status=status)

    def get(self, request, pk):
        return self._page(self.get_operation(pk))

    def post(self, request, pk):
        op = self.get_operation(pk)
        try:
            services.operation_cancel(operation=op, actor=request.user, request=request)
        except REFUSALS as exc:
            status, errors = refusal(exc)
            op.refresh_from_db()
            return self._page(op, errors=errors, status=status)
        messages.success(request, f"The {op.kind} of {op.app.name} is cancelled.")
        return HttpResponseRedirect(reverse("portal:operation", args=[op.pk]))
