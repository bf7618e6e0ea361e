"""Metering of gateway routes: mix into a viewset whose actions call a ledger node."""

from __future__ import annotations

from django.utils import timezone

from apps.metering import counters


def content_length(request) -> int:
    """The request body's size as received (the body limit made Django read exactly this)."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class GatewayMeteringMixin:
    """Each request that reached a node (``apps.gateway.services._call`` notes which) adds
    its body bytes both ways and, for the actions in ``submission_actions``, its
    transactions by receipt, to the app's counters of that node's region — once the
    answer is rendered (its size is known then). A request no node answered adds nothing."""

    submission_actions: frozenset[str] = frozenset({"transactions"})
    # Only these actions are metered (None: all); e.g. app users: the custody signature
    # route is the tenant's traffic, registering a user is the platform's own.
    metered_actions: frozenset[str] | None = None

    def initial(self, request, *args, **kwargs):
        self._tally = None
        if self.metered_actions is not None and getattr(self, "action", None) not in self.metered_actions:
            return super().initial(request, *args, **kwargs)
        self._tally = counters.Tally()
        self._tally_token = counters.current.set(self._tally)
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        tally = getattr(self, "_tally", None)
        if tally is None:
            return response
        counters.current.reset(self._tally_token)
        self._tally = None
        submission = self.action in self.submission_actions
        bytes_in = content_length(request)

        def record(rendered):
            counters.count_answer(
                tally,
                submission=submission,
                status=rendered.status_code,
                data=getattr(rendered, "data", None),
                bytes_in=bytes_in,
                bytes_out=len(rendered.content),
            )
            counters.record(tally, timezone.now())

        if hasattr(response, "add_post_render_callback"):
            response.add_post_render_callback(record)
        else:  # an HttpResponse passed through as the node sent it
            record(response)
        return response
