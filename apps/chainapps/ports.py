"""Host ports for containers the control plane publishes: allocated once, kept across restarts.

Without an explicit host port the engine picks a new one at every container start, and
again whenever a running container joins or leaves a network that takes over its default
route, so an endpoint would change under its users. Ledger nodes and ordering members get
a port from ``BSN_NODE_PORT_RANGE`` (nodes from the bottom, members from the top); the
unique ``host_port`` columns make concurrent allocations safe within each table, and a
port the engine refuses (another row's or another program's) is skipped.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, models, transaction

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


def _taken(row: models.Model) -> set[int]:
    from apps.ordering.models import OrderingMember

    taken: set[int] = set()
    for model in (LedgerNode, OrderingMember):
        rows = model.objects.exclude(host_port=None)
        if isinstance(row, model):
            rows = rows.exclude(pk=row.pk)
        taken.update(rows.values_list("host_port", flat=True))
    return taken


def host_port(
    row: models.Model, *, refused: int | None = None, from_top: bool = False, busy: set[int] | None = None
) -> int:
    """The row's host port (a LedgerNode or an OrderingMember), allocating a free one if it has none.

    ``refused``: the engine could not bind that port: allocate the next free one after it
    (in the search direction) instead. ``busy``: ports the engine already publishes for
    containers outside our records (another installation's, say), skipped as well.
    """
    if row.host_port and refused is None:
        return row.host_port
    low, high = port_range()
    order = list(range(high, low - 1, -1)) if from_top else list(range(low, high + 1))
    if refused is not None and refused in order:
        at = order.index(refused) + 1
        order = order[at:] + order[:at]
    taken = _taken(row) | (busy or set())
    for port in order:
        if port in taken or port == refused:
            continue
        try:
            with transaction.atomic():
                type(row).objects.filter(pk=row.pk).update(host_port=port)
        except IntegrityError:
            continue  # another row took it meanwhile
        row.host_port = port
        return port
    raise PermanentRuntimeError(f"no free host port left in BSN_NODE_PORT_RANGE {low}-{high}")


def node_host_port(node: LedgerNode, *, refused: int | None = None, busy: set[int] | None = None) -> int:
    return host_port(node, refused=refused, busy=busy)


def engine_busy_ports(driver) -> set[int]:
    """What the driver's engine already publishes (empty for drivers that cannot tell)."""
    published = getattr(driver, "published_ports", None)
    return published() if published is not None else set()


def node_release_host_port(node: LedgerNode) -> None:
    """The node is gone from its engine: its port may go to another node."""
    LedgerNode.objects.filter(pk=node.pk).update(host_port=None)
    node.host_port = None
