"""The audit log in the console: read-only, with a page that verifies the whole hash chain
(``audit_verify``, the check ``GET /api/v1/audit-events`` consumers can repeat)."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path

from apps.audit.models import AuditEvent
from apps.common.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "created_at", "actor_label", "action", "object_type", "object_id", "tenant"]
    list_filter = ["action", "object_type"]
    search_fields = ["action", "object_id", "actor_label"]
    list_select_related = ["tenant"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    change_list_template = "console/audit_change_list.html"

    def get_urls(self):
        verify = self.admin_site.admin_view(self.verify_view)
        return [path("verify/", verify, name="audit_auditevent_verify"), *super().get_urls()]

    def verify_view(self, request):
        """Walk the chain now (not the dashboard's cached result); read-only, so a GET."""
        from apps.console.selectors import audit_chain_check

        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Verify the audit hash chain",
            "result": audit_chain_check(fresh=True),
        }
        return TemplateResponse(request, "console/audit_verify.html", context)
