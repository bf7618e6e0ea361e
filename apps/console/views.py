"""The console's pages outside a model's admin: the dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse

from apps.console.selectors import platform_health


def dashboard(request):
    """ "Is the platform healthy?" at a glance (server-rendered; staff only via ``admin_view``)."""
    context = {**admin.site.each_context(request), "title": "Platform health", "health": platform_health()}
    return TemplateResponse(request, "console/dashboard.html", context)
