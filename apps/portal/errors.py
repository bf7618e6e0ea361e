"""Error pages for people: a 500, a 404 and a failed CSRF check under ``/portal/`` (and the
operator console under ``/admin/``) answer an HTML page that says what to do next; every
other path keeps the API's problem+json (``apps.common.errors``) or Django's default.

``bsn/urls.py`` names ``page_or_problem_404`` / ``page_or_problem_500`` as its handlers
and ``CSRF_FAILURE_VIEW`` names ``csrf_failure``. The 500 page is a template of its own
that reads nothing from the database or the session (the error may be the database).
"""

from __future__ import annotations

import logging
import sys

from django.http import HttpResponse
from django.shortcuts import render
from django.template import loader
from django.views import csrf

from apps.common.errors import api_not_found, api_server_error
from apps.common.incidents import new_ref

logger = logging.getLogger(__name__)

PAGE_PREFIXES = ("/portal/", "/admin/")


def wants_page(request) -> bool:
    """A person's path (the portal or the console), not the API's or a probe's."""
    return request.path.startswith(PAGE_PREFIXES)


def _home(request) -> tuple[str, str]:
    if request.path.startswith("/admin/"):
        return "Back to the console", "/admin/console/"
    return "Back to the dashboard", "/portal/"


def page_or_problem_404(request, exception=None):
    """handler404: the portal's "Not found" page under /portal/ and /admin/, else the API's problem."""
    if not wants_page(request):
        return api_not_found(request, exception)
    context = {
        "title": "Not found",
        "detail": f"There is no page at {request.path}. Check the address, or start again from the dashboard.",
        "action": _home(request),
    }
    return render(request, "portal/error.html", context, status=404)


def page_or_problem_500(request):
    """handler500: a page with a reference to quote under /portal/ and /admin/, else the API's problem."""
    if not wants_page(request):
        return api_server_error(request)
    ref = new_ref()  # the person quotes it; staff find the traceback by it in the log
    logger.error("unhandled error [ref %s] at %s", ref, request.path, exc_info=sys.exc_info()[0] is not None)
    label, url = _home(request)
    # No RequestContext: no session, user or messages lookups (the database may be what failed).
    html = loader.get_template("portal/server_error.html").render({"ref": ref, "label": label, "url": url})
    return HttpResponse(html, status=500)


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: under /portal/ and /admin/ a page that says to reload and try again."""
    if not wants_page(request):
        return csrf.csrf_failure(request, reason=reason)
    logger.info("CSRF check failed at %s: %s", request.path, reason)
    label, url = _home(request)
    context = {
        "title": "This form has expired",
        "detail": "The page you sent it from was too old, or your session changed (you signed in or out in "
        "another tab), so its security check (CSRF) failed and nothing was changed. Go back, reload the page "
        "and send the form again. If this keeps happening, allow cookies for this site: the check needs one.",
        "action": (label, url),
    }
    return render(request, "portal/error.html", context, status=403)
