"""The platform's usage in Prometheus text at ``/metrics`` (staff session, or the scrape token).

Built with prometheus_client from the database on each scrape (a custom collector, no
process-local state): every web process answers the same, and counters only grow because
UsageHour rows are only ever added to.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from apps.metering import selectors

LABELS = ["tenant", "app", "app_name", "region"]


class UsageCollector:
    """Per app and region: transactions by status, gateway bytes, node seconds; storage per node."""

    def collect(self):
        rows, storage_rows = selectors.platform_totals()
        tx = CounterMetricFamily(
            "bsn_app_transactions", "Transactions through the gateway by receipt status.", labels=[*LABELS, "status"]
        )
        data = CounterMetricFamily(
            "bsn_app_gateway_bytes", "Body bytes at the gateway, in (requests) and out.", labels=[*LABELS, "direction"]
        )
        seconds = CounterMetricFamily("bsn_app_node_seconds", "Seconds of running ledger nodes.", labels=LABELS)
        for row in rows:
            labels = [row["app__tenant__slug"], str(row["app_id"]), row["app__name"], row["region__code"]]
            for status in ("committed", "failed", "rejected"):
                tx.add_metric([*labels, status], row[f"tx_{status}"] or 0)
            data.add_metric([*labels, "in"], row["bytes_in"] or 0)
            data.add_metric([*labels, "out"], row["bytes_out"] or 0)
            seconds.add_metric(labels, row["node_seconds"] or 0)
        storage = GaugeMetricFamily(
            "bsn_app_storage_bytes", "bsn_storage_bytes of the app's node in the region, last reading.", labels=LABELS
        )
        for row in storage_rows:
            labels = [row["node__app__tenant__slug"], str(row["node__app_id"]), row["node__app__name"]]
            storage.add_metric([*labels, row["node__region__code"]], row["storage_bytes"])
        yield from (tx, data, seconds, storage)


def _allowed(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.BSN_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    return False


def metrics_view(request):
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    if not _allowed(request):
        return HttpResponse(
            "platform metrics: a staff session or the scrape token (BSN_METRICS_TOKEN) as a Bearer token\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
