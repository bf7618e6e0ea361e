"""What the team, keys, webhooks and money pages share on top of ``PortalView``.

The services these pages call are the API's, and several of them still refuse with DRF
exceptions (``Conflict``, ``PermissionDenied``, ``ValidationError``, the gateway's errors)
rather than ``DomainError``: ``ServicePage`` turns both kinds into a page a person can act
on, so a refusal never becomes a 500. Forms are validated by the API's input serializers
(``validated``), never by a second copy of their rules.
"""

from __future__ import annotations

import secrets
import uuid

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.views import View
from rest_framework.exceptions import APIException, ValidationError

from apps.common.errors import DomainError
from apps.portal.views.base import PortalView, error_page, serializer_errors


def refusal(exc: Exception) -> tuple[int, str, dict[str, list[str]]]:
    """``(status, message, {field: [messages]})`` of a service's or a serializer's refusal."""
    if isinstance(exc, ValidationError):
        errors = serializer_errors(exc)
        first = next(iter(errors.items()), ("", [""]))
        label = "" if first[0] == "non_field_errors" else f"{first[0]}: "
        return 400, f"{label}{first[1][0]}", errors
    if isinstance(exc, DomainError):
        extra = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
        return exc.status_code, exc.detail, dict(extra) if isinstance(extra, dict) else {}
    if isinstance(exc, APIException):
        return exc.status_code, str(exc.detail), {}
    raise exc


def posted(request, fields, *, lists: tuple[str, ...] = ()) -> dict:
    """The form's fields the serializer knows, as the API would receive them: an empty
    optional field is left out (a blank number is "not given", not "not a number");
    ``lists``: fields typed as a comma- or space-separated list."""
    data: dict = {}
    for name in fields:
        value = request.POST.get(name, "")
        if name in lists:
            items = [item for item in value.replace(",", " ").split() if item]
            if items:
                data[name] = items
        elif value != "":
            data[name] = value
    return data


def validated(serializer_class, data: dict) -> dict:
    """The API input serializer's validated data; raises its ``ValidationError``."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def parse_uuid(value) -> uuid.UUID:
    """A path id; anything else is the portal's "Not found" page (as a random id would be)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404 from None


def no_store(response):
    """A page that shows a secret: never cached, never kept by the browser's history cache."""
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


FORMS_SENT = "bsn_portal_forms_sent"  # session: ids of the last creating forms that succeeded
FORMS_REMEMBERED = 20


def form_id() -> str:
    """A fresh id for a form whose answer shows a secret (its hidden ``form_id`` field)."""
    return secrets.token_urlsafe(16)


def already_sent(request) -> bool:
    """This form (its ``form_id``) already made something in this session: a reload of the
    page that showed a secret must not quietly make a second live token or webhook."""
    return bool(request.POST.get("form_id")) and request.POST["form_id"] in request.session.get(FORMS_SENT, [])


def mark_sent(request) -> None:
    sent = request.session.get(FORMS_SENT, [])
    if request.POST.get("form_id"):
        request.session[FORMS_SENT] = [*sent[-(FORMS_REMEMBERED - 1) :], request.POST["form_id"]]


def page_of(request, queryset, *, per_page: int = 25, param: str = "page"):
    """A page of ``queryset``; a page number out of range or not a number is the nearest page."""
    return Paginator(queryset, per_page).get_page(request.GET.get(param))


class _Refusals(View):
    """Sits between ``PortalView`` and ``View`` (see ``ServicePage``'s bases): it sees a
    handler's refusal after the sign-in and role checks, before PortalView's own handling."""

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        except (APIException, DomainError) as exc:
            status, message, _ = refusal(exc)
            if request.method == "GET":
                return error_page(request, status, "This cannot be shown", message)
            messages.error(request, message)
            return HttpResponseRedirect(self.back_url())


class ServicePage(PortalView, _Refusals):
    """``PortalView`` whose refused buttons lead back to their list page (``back_url``) with
    the reason, whether the service said no with a ``DomainError`` or a DRF exception."""

    def back_url(self) -> str:
        """Where a refused button sends the user back to (its list page)."""
        return self.request.path

    def form_error(self, template: str, context: dict, exc: Exception):
        """The form again, with what was typed and the reason, at the refusal's status."""
        status, message, errors = refusal(exc)
        return self.render(template, {**context, "errors": errors, "error": message}, status=status)
