"""Operations in the portal: one operation's page (live while it runs) and an app's list.

The page polls a fragment every 2 s with htmx while the operation is open; once it is
finished the fragment answers HTTP 286, which tells htmx to stop polling (htmx docs,
"Polling": "If you want to stop polling from a server response you can respond with the
HTTP response code 286"). The fragment is also a plain page section, so without script
a reload shows the same.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404

from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.portal.views.base import PortalView

STOP_POLLING = 286


def _steps(operation: Operation) -> list[dict]:
    """The operation's per-node steps with the node's region (steps are keyed by node id)."""
    steps = operation.steps or {}
    regions = dict(
        LedgerNode.objects.filter(pk__in=[k for k in steps if len(k) == 36]).values_list("pk", "region__code")
    )
    regions = {str(k): v for k, v in regions.items()}
    rows = []
    for node_id, step in steps.items():
        step = step if isinstance(step, dict) else {}
        rows.append(
            {
                "region": regions.get(node_id, "—"),
                "state": step.get("state", ""),
                "action": step.get("action", ""),
                "error": step.get("error", ""),
            }
        )
    return sorted(rows, key=lambda r: r["region"])


def _log(operation: Operation) -> list[dict]:
    """Log lines as tenants see them: the message, never the internal ``detail``."""
    return [{"at": e.get("at", ""), "message": e.get("message", "")} for e in operation.log or []]


class OperationView(PortalView):
    section = "apps"
    fragment = False

    def get(self, request, pk):
        operation = get_object_or_404(self.scope(Operation.objects.select_related("app", "created_by")), pk=pk)
        context = {"op": operation, "steps": _steps(operation), "log": _log(operation)}
        if self.fragment:
            status = STOP_POLLING if operation.is_finished else 200
            return self.render("portal/operations/_status.html", context, status=status)
        return self.render("portal/operations/detail.html", context)


class AppOperationsView(PortalView):
    section = "apps"
    per_page = 25

    def get(self, request, pk):
        app = get_object_or_404(self.scope(ChainApp.objects.all()), pk=pk)
        operations = Operation.objects.filter(app=app).select_related("created_by").order_by("-created_at")
        page = Paginator(operations, self.per_page).get_page(request.GET.get("page"))
        return self.render("portal/operations/list.html", {"app": app, "page": page})
