"""Host ports for containers the control plane publishes: allocated once, kept across restarts.

Without an explicit host port the engine picks a new one at every container start, and
again whenever a running container joins or leaves a network that takes over its default
route, so an endpoint would change under its users. Ledger nodes and ordering members get
a port from ``BSN_NODE_PORT_RANGE`` (nodes from the bottom, members from the top); the
unique ``host_port`` columns make concurrent allocations safe within each table, and a
port the engine refuses (another row's or another program's) is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, models, transaction

from apps.chainapps.models import LedgerNode
from apps.runtime.base import PermanentRuntimeError, PortInUse, PublishedPorts, TransientRuntimeError, supports

logger = logging.getLogger(__name__)

PORT_ATTEMPTS = 10  # host ports tried in one start before giving up (the caller retries later)
T = TypeVar("T")


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
    from apps.chainapps.models import WarmNode
    from apps.ordering.models import OrderingMember

    taken: set[int] = set()
    columns = (
        (LedgerNode, "host_port"),
        (WarmNode, "host_port"),  # a warm node's port becomes its node's when claimed
        (OrderingMember, "host_port"),
        (OrderingMember, "peer_host_port"),
    )
    for model, field in columns:
        rows = model.objects.exclude(**{field: None})
        if isinstance(row, model):
            rows = rows.exclude(pk=row.pk)
        taken.update(rows.values_list(field, flat=True))
    if isinstance(row, OrderingMember):  # its other port is taken too
        taken.update(p for p in (row.host_port, row.peer_host_port) if p)
    return taken


def host_port(
    row: models.Model,
    *,
    refused: int | None = None,
    from_top: bool = False,
    busy: set[int] | None = None,
    field: str = "host_port",
) -> int:
    """The row's host port (a LedgerNode, WarmNode or OrderingMember; ``field`` names the column,
    e.g. a member's ``peer_host_port``), allocating a free one if it has none.

    ``refused``: the engine could not bind that port: allocate the next free one after it
    (in the search direction) instead. ``busy``: ports the engine already publishes for
    containers outside our records (another installation's, say), skipped as well.
    """
    if getattr(row, field) and refused is None:
        return getattr(row, field)
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
                type(row).objects.filter(pk=row.pk).update(**{field: port})
        except IntegrityError:
            continue  # another row took it meanwhile
        setattr(row, field, port)
        return port
    raise PermanentRuntimeError(f"no free host port left in BSN_NODE_PORT_RANGE {low}-{high}")


def engine_busy_ports(driver) -> set[int]:
    """What the driver's engine already publishes (empty for drivers that cannot tell)."""
    return driver.published_ports() if supports(driver, PublishedPorts) else set()


def start_on_own_port(
    row: models.Model, driver, start: Callable[[int | None], T], *, what: str, from_top: bool = False
) -> T:
    """``start(host_port)`` with the row's own host port, allocated first where the engine
    publishes ports (the process driver picks its own: ``start(None)``). A port the engine
    refuses (``PortInUse``) is replaced by the next free one, up to PORT_ATTEMPTS times."""
    if supports(driver, PublishedPorts) and not row.host_port:
        host_port(row, from_top=from_top, busy=engine_busy_ports(driver))
    for _ in range(PORT_ATTEMPTS):
        try:
            return start(row.host_port)
        except PortInUse as exc:
            logger.warning("%s: host port %s is taken on the engine; allocating another", what, exc.port)
            host_port(row, refused=exc.port, from_top=from_top, busy=engine_busy_ports(driver))
    raise TransientRuntimeError(f"{what}: {PORT_ATTEMPTS} host ports in a row were taken on the engine")


def node_release_host_port(node: LedgerNode) -> None:
    """The node is gone from its engine: its port may go to another node."""
    LedgerNode.objects.filter(pk=node.pk).update(host_port=None)
    node.host_port = None
