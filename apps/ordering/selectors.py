"""Reads for the ordering service: rows plus a live look at each member."""

from __future__ import annotations

from collections import Counter
from typing import Any

from apps.ordering.models import AppOrderingCredential, OrderingCluster, OrderingMember
from apps.ordering.services import member_health
from apps.runtime.drivers import engine_key


def ordering_status(*, probe: bool = True) -> dict[str, Any]:
    """The cluster row and one entry per member; ``probe`` asks each member (1 s timeout)."""
    cluster = OrderingCluster.objects.filter(pk=1).first()
    members = []
    for member in OrderingMember.objects.select_related("region").order_by("index"):
        live = member_health(member.endpoint) if probe else None
        header = (live or {}).get("header") or {}
        members.append(
            {
                "index": member.index,
                "name": member.name,
                "region": member.region.code,
                "engine": engine_key(member.region).removeprefix("docker:"),
                "state": member.state,
                "endpoint": member.endpoint,
                "answers": live is not None,
                "is_leader": bool(live) and live.get("leader") == header.get("member_id"),
                "raft_term": int(live.get("raftTerm") or 0) if live else None,
                "db_size": int(live.get("dbSize") or 0) if live else None,
                "last_seen_at": member.last_seen_at,
                "last_error": member.last_error,
            }
        )
    per_engine = Counter(m["engine"] for m in members)
    return {
        "provisioned": cluster is not None,
        # Members on the busiest engine: losing that engine loses them (quorum needs 2 of 3).
        "engines": len(per_engine),
        "most_on_one_engine": max(per_engine.values(), default=0),
        "state": cluster.state if cluster else "absent",
        "auth_enabled": bool(cluster and cluster.auth_enabled),
        "last_checked_at": cluster.last_checked_at if cluster else None,
        "last_error": cluster.last_error if cluster else "",
        "apps": AppOrderingCredential.objects.filter(app__isnull=False).count(),
        "spare_users": AppOrderingCredential.objects.filter(app__isnull=True, provisioned_at__isnull=False).count(),
        "spare_users_wanted": cluster.spare_users if cluster else 0,
        "members": members,
    }
