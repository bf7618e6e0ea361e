"""Admin pieces shared by the apps: the operator console (docs/console.md).

Two kinds of screens: rows nobody edits (``ReadOnlyAdmin``: audit events, journals,
metering, keys, invoices) and rows the platform makes through services
(``ServiceAdmin``: no add, no delete, no "delete selected"; changes are admin actions or
forms whose ``save_model`` calls the service, never ``obj.save()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.utils.html import format_html
from rest_framework.exceptions import APIException

from apps.common.errors import DomainError


def refusal_text(exc: Exception) -> str:
    """What a service's refusal says (domain errors, DRF validation errors, ValueErrors)."""
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(map(str, detail))
    return str(detail if detail is not None else exc)


# The refusals a service may raise for an operator's request: shown as a message, never a 500.
REFUSALS = (DomainError, APIException, ValueError)


def run_each(
    modeladmin: admin.ModelAdmin,
    request,
    rows: Iterable[Any],
    call: Callable[[Any], Any],
    done: str,
    label: Callable[[Any], str] = str,
) -> int:
    """Call a service once per selected row; report how many it did (``done`` formats
    ``{n}``) and each refusal by row. Returns the count done."""
    count, refused = 0, []
    for row in rows:
        try:
            call(row)
            count += 1
        except REFUSALS as exc:
            refused.append(f"{label(row)}: {refusal_text(exc)}")
    if count:
        modeladmin.message_user(request, done.format(n=count), messages.SUCCESS)
    for line in refused:
        modeladmin.message_user(request, line, messages.ERROR)
    return count


def bar(used: int, total: int, *, title: str = "") -> str:
    """A small server-rendered capacity bar (plain HTML and inline CSS, no script)."""
    pct = 0 if total <= 0 else min(100, round(100 * used / total))
    colour = "#2e7d32" if pct < 75 else "#f9a825" if pct < 90 else "#c62828"
    return format_html(
        '<span class="console-bar" title="{}" style="display:inline-block;width:8em;height:0.8em;'
        'border:1px solid #888;vertical-align:middle;background:#eee">'
        '<span style="display:block;height:100%;width:{}%;background:{}"></span></span> {}/{}',
        title or f"{used} of {total}",
        pct,
        colour,
        used,
        total,
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Listing and detail only: no add, change or delete (rows the platform derives or that
    must never change: audit events, journals, metering, keys, invoices)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ServiceAdmin(admin.ModelAdmin):
    """Rows made and removed by services (apps, nodes, operations, regions, tenants …): the
    admin never adds or deletes them directly; subclasses offer actions that call the
    services. Django drops "delete selected" when delete is not permitted."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ServiceFormAdmin(ServiceAdmin):
    """A change form whose ``save_model`` calls a service: it calls ``self.refused(request,
    exc)`` on a refusal, and the page then shows the reason (nothing saved, no "changed
    successfully", no admin log entry) instead of a 500 or a false success."""

    def refused(self, request, exc: Exception) -> None:
        request._console_refused = refusal_text(exc)

    def _refusal_response(self, request):
        reason = getattr(request, "_console_refused", None)
        if reason is None:
            return None
        self.message_user(request, f"Not saved: {reason}", messages.ERROR)
        return HttpResponseRedirect(request.path)

    def response_add(self, request, obj, post_url_continue=None):
        return self._refusal_response(request) or super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        return self._refusal_response(request) or super().response_change(request, obj)

    def log_addition(self, request, obj, message):
        return None if hasattr(request, "_console_refused") else super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        return None if hasattr(request, "_console_refused") else super().log_change(request, obj, message)


class ReadOnlyInline(admin.TabularInline):
    """A related list shown on a parent's page: no add, change or delete."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
