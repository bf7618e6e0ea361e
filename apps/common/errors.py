"""One error format for every 4xx/5xx: RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
import sys

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from apps.common.incidents import new_ref

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://bsn.example/problems/"


class Conflict(exceptions.APIException):
    """The request is valid but clashes with the current state (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than this server accepts (DATA_UPLOAD_MAX_MEMORY_SIZE)."
    default_code = "payload-too-large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A dependency is unavailable."
    default_code = "unavailable"


class DomainError(Exception):
    """A refusal raised by a service (not by DRF): status, stable code, detail, extra members.

    Services raise these; ``problem_exception_handler`` renders them as problem details, so
    business code never imports DRF exceptions.
    """

    status_code = 400
    code = "error"
    title = "Bad request"

    def __init__(
        self, detail: str, *, code: str | None = None, status: int | None = None, extra=None, retry_after=None
    ):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status_code = status
        self.extra = extra or {}
        self.retry_after = retry_after

    def problem(self, instance: str = "") -> dict:
        body = problem(
            self.status_code, self.code, _TITLES.get(self.status_code, "Error"), self.detail, instance=instance
        )
        body.update(self.extra)
        return body


def problem(
    status_code: int, code: str, title: str, detail: str, *, errors: dict | list | None = None, instance: str = ""
) -> dict:
    body = {"type": TYPE_BASE + code, "title": title, "status": status_code, "detail": detail, "code": code}
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return body


def _first_message(errors) -> str:
    if isinstance(errors, dict):
        for field, value in errors.items():
            msg = _first_message(value)
            return msg if field == "non_field_errors" else f"{field}: {msg}"
    if isinstance(errors, list) and errors:
        return _first_message(errors[0])
    return str(errors)


def _field_errors(detail) -> dict:
    """Always ``{field: [messages]}`` (nested for list/dict fields), whoever raised the error."""
    if isinstance(detail, dict):
        return {str(k): v if isinstance(v, dict | list) else [v] for k, v in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": detail}
    return {"non_field_errors": [detail]}


_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    411: "Length required",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def problem_exception_handler(exc, context):
    request = context.get("request")
    if isinstance(exc, DomainError):
        body = exc.problem(instance=request.path if request is not None else "")
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(body, status=exc.status_code, content_type=PROBLEM_CONTENT_TYPE, headers=headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):  # raised while DRF reads request.body
        exc = PayloadTooLarge()
    response = exception_handler(exc, context)
    instance = request.path if request is not None else ""
    if response is None:
        ref = new_ref()  # the tenant quotes it; staff find the traceback by it
        logger.error("unhandled error [ref %s]", ref, exc_info=exc)
        body = problem(500, "server-error", "Internal server error", "An unexpected error occurred.", instance=instance)
        body["ref"] = ref
        return Response(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        title = "Invalid input"
        body = problem(
            response.status_code,
            "invalid",
            title,
            _first_message(exc.detail),
            errors=_field_errors(exc.detail),
            instance=instance,
        )
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else code
        if isinstance(codes, str):
            code = codes
        # Codes from another vocabulary (the ledger's rejection reasons) are kept verbatim.
        verbatim = getattr(exc, "problem_code", None)
        title = _TITLES.get(response.status_code, "Error")
        code = verbatim or str(code).replace("_", "-")
        body = problem(response.status_code, code, title, str(detail), instance=instance)
        body.update(getattr(exc, "problem_extra", None) or {})
        if getattr(exc, "retry_after", None):
            response["Retry-After"] = str(exc.retry_after)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def api_not_found(request, exception=None):
    """handler404 for paths outside DRF views (unknown API routes)."""
    body = problem(404, "not-found", "Not found", "No such resource.", instance=request.path)
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)


def api_server_error(request):
    """handler500 for errors outside DRF views: Django calls it while handling the exception."""
    ref = new_ref()
    logger.error("unhandled error [ref %s] at %s", ref, request.path, exc_info=sys.exc_info()[0] is not None)
    body = problem(500, "server-error", "Internal server error", "An unexpected error occurred.", instance=request.path)
    body["ref"] = ref
    return JsonResponse(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
