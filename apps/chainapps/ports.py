"""Host ports for ledger nodes on Docker: one per node, allocated once, kept across restarts.

Without an explicit host port the engine picks a new one at every container start, so a
node's endpoint would change whenever it restarts. Ports come from
``BSN_NODE_PORT_RANGE``; the unique ``LedgerNode.host_port`` makes concurrent
allocations safe, and a port the engine refuses (something else holds it) is skipped.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from apps.chainapps.models import LedgerNode
from apps.runtime.base import PermanentRuntimeError


def port_range() -> tuple[int, int]:
    raw = str(settings.BSN_NODE_PORT_RANGE)
    try:
        low, high = (int(part) for part in raw.split("-", 1))
    except ValueError:
        raise ImproperlyConfigured(f"BSN_NODE_PORT_RANGE must look like 20000-29999, got {raw!r}") from None
    if not 1024 <= low <= high <= 65535:
        raise ImproperlyConfigured(f"BSN_NODE_PORT_RANGE must lie within 1024-65535, low first; got {raw!r}")
    return low, high


def node_host_port(node: LedgerNode, *, refused: int | None = None) -> int:
    """The node's host port, allocating the lowest free one if it has none.

    ``refused``: the engine could not bind that port (something outside our records
    holds it): allocate the next free one after it instead.
    """
    if node.host_port and refused is None:
        return node.host_port
    low, high = port_range()
    taken = set(LedgerNode.objects.exclude(pk=node.pk).exclude(host_port=None).values_list("host_port", flat=True))
    start = low if refused is None or refused >= high else refused + 1
    for port in [*range(start, high + 1), *range(low, start)]:
        if port in taken or port == refused:
            continue
        try:
            with transaction.atomic():
                LedgerNode.objects.filter(pk=node.pk).update(host_port=port)
        except IntegrityError:
            continue  # another node took it meanwhile
        node.host_port = port
        return port
    raise PermanentRuntimeError(f"no free host port left in BSN_NODE_PORT_RANGE {low}-{high}")


def node_release_host_port(node: LedgerNode) -> None:
    """The node is gone from its engine: its port may go to another node."""
    LedgerNode.objects.filter(pk=node.pk).update(host_port=None)
    node.host_port = None
