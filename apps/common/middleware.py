"""Request bodies are bounded before any view or parser reads them (413 problem+json).

Django checks ``DATA_UPLOAD_MAX_MEMORY_SIZE`` only when ``request.body`` is read; DRF's
parsers read the request as a stream, so every view that never touched ``request.body``
(most of the API and the gateway) parsed bodies of any size. And a chunked body carries
no Content-Length: Django's WSGI request reads it as empty, silently dropping what the
client sent. Here, once for every route and every content type:

- a Content-Length over the limit is refused before the body is read;
- a chunked body is read up to the limit when the server delivers a terminated input
  (``wsgi.input_terminated``: gunicorn does) and handed on with its length, refused over
  the limit; a server that cannot terminate the input gets 411 (Length Required).
"""

from __future__ import annotations

from io import BytesIO

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import JsonResponse

from apps.common.errors import PROBLEM_CONTENT_TYPE, problem


def _problem(request, status: int, code: str, title: str, detail: str) -> JsonResponse:
    body = problem(status, code, title, detail, instance=request.path)
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


def too_large(request, limit: int) -> JsonResponse:
    return _problem(
        request,
        413,
        "payload-too-large",
        "Payload too large",
        f"The request body is larger than this server accepts ({limit} bytes).",
    )


class BodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None:
            return self.get_response(request)
        meta = request.META
        length = (meta.get("CONTENT_LENGTH") or "").strip()
        chunked = "chunked" in (meta.get("HTTP_TRANSFER_ENCODING") or "").lower()
        if length:
            if not length.isdigit():
                return _problem(request, 400, "bad-request", "Bad request", "Content-Length is not a number.")
            if int(length) > limit:
                return too_large(request, limit)
        elif chunked and "wsgi.input" in meta:
            if not meta.get("wsgi.input_terminated"):
                return _problem(
                    request, 411, "length-required", "Length required", "Send the body with a Content-Length."
                )
            body = meta["wsgi.input"].read(limit + 1)  # the server decodes the chunks
            if len(body) > limit:
                return too_large(request, limit)
            meta["CONTENT_LENGTH"] = str(len(body))
            # What Django's WSGIRequest builds from a Content-Length (it saw none).
            request._stream = LimitedStream(BytesIO(body), len(body))
        return self.get_response(request)
