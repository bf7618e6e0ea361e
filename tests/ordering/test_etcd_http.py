"""The stdlib etcd client against a real local etcd process."""

from __future__ import annotations

import threading
import time

import pytest

from bsn.ledger.etcd_http import (
    EtcdAuthError,
    EtcdClient,
    EtcdCompacted,
    EtcdUnavailable,
    compare,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)


def test_prefix_end():
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def test_kv_txn_and_failover_to_the_next_endpoint(etcd_server, prefix):
    c = EtcdClient(["http://127.0.0.1:9", etcd_server.endpoint], timeout=2)  # first one refuses
    rev = c.put(f"{prefix}a", "1")
    assert rev > 0
    assert c.get(f"{prefix}a").value == b"1"
    ok, _ = c.txn([compare(f"{prefix}h", "CREATE", "==", 0)], [op_put(f"{prefix}h", "1"), op_delete(f"{prefix}a")])
    assert ok and c.get(f"{prefix}a") is None
    ok, reply = c.txn(
        [compare(f"{prefix}h", "VALUE", "==", "0")], [op_put(f"{prefix}h", "2")], [op_range(f"{prefix}h")]
    )
    assert not ok and c.txn_range_kvs(reply)[0].value == b"1"
    for i in range(3):
        c.put(f"{prefix}k/{i}", str(i))
    res = c.range(f"{prefix}k/", prefix=True, sort_order="DESCEND", sort_target="CREATE", limit=2)
    assert [kv.value for kv in res.kvs] == [b"2", b"1"] and res.more
    assert c.delete(f"{prefix}k/", prefix=True) == 3


def test_all_endpoints_down_is_unavailable():
    c = EtcdClient(["http://127.0.0.1:9", "http://127.0.0.1:7"], timeout=0.5)
    with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
        c.get("/x")


def test_leases(etcd_server, prefix):
    c = EtcdClient([etcd_server.endpoint])
    lease, ttl = c.lease_grant(3)
    assert ttl == 3
    c.put(f"{prefix}leased", "x", lease=lease)
    assert c.lease_keepalive(lease) == 3
    c.lease_revoke(lease)
    assert c.lease_keepalive(lease) == 0
    assert c.get(f"{prefix}leased") is None
    c.lease_revoke(lease)  # twice is fine


def test_watch_streams_events_and_close_unblocks(etcd_server, prefix):
    c = EtcdClient([etcd_server.endpoint])
    start = c.put(f"{prefix}w/0", "0")
    seen = []
    watch = c.watch(f"{prefix}w/", prefix=True, start_revision=start, read_timeout=10)

    def writer():
        time.sleep(0.2)
        c.put(f"{prefix}w/1", "1")
        c.delete(f"{prefix}w/0")
        time.sleep(0.2)
        watch.close()

    threading.Thread(target=writer).start()
    began = time.monotonic()
    for events in watch:
        seen += [(e.type, e.kv.key.decode()[len(prefix) :]) for e in events]
    assert time.monotonic() - began < 3
    assert seen == [("PUT", "w/0"), ("PUT", "w/1"), ("DELETE", "w/0")]


def test_watch_from_a_compacted_revision(etcd_server, prefix):
    c = EtcdClient([etcd_server.endpoint])
    first = c.put(f"{prefix}c", "0")
    last = c.put(f"{prefix}c", "1")
    c.call("/v3/kv/compaction", {"revision": str(last)})
    with pytest.raises(EtcdCompacted):
        for _ in c.watch(f"{prefix}c", start_revision=first, read_timeout=2):
            pass


def test_idle_watch_times_out_as_unavailable(etcd_server, prefix):
    c = EtcdClient([etcd_server.endpoint])
    with pytest.raises(EtcdUnavailable, match="nothing within"):
        for _ in c.watch(f"{prefix}idle", read_timeout=0.3):
            pass


def test_auth_roles_confine_users_and_tokens_refresh(etcd_factory):
    server = etcd_factory()  # its own etcd: enabling auth is global
    admin = EtcdClient([server.endpoint])
    assert admin.user_add("root", "root-pw") is True
    assert admin.user_add("root", "other") is False  # existed: left as it was
    admin.role_add("root")
    admin.user_grant_role("root", "root")
    for app in ("a", "b"):
        admin.user_add(f"app-{app}", f"pw-{app}")
        admin.role_add(f"app-{app}")
        admin.role_grant_permission(f"app-{app}", f"/bsn/apps/{app}/", prefix_end(f"/bsn/apps/{app}/"))
        admin.user_grant_role(f"app-{app}", f"app-{app}")
    admin.auth_enable()

    root = EtcdClient([server.endpoint], user="root", password="root-pw")
    root.put("/bsn/root-only", "secret")
    a = EtcdClient([server.endpoint], user="app-a", password="pw-a")
    a.put("/bsn/apps/a/k", "v")
    assert a.get("/bsn/apps/a/k").value == b"v"
    for attempt in (
        lambda: a.get("/bsn/apps/b/k"),
        lambda: a.put("/bsn/apps/b/k", "x"),
        lambda: a.get("/bsn/root-only"),
        lambda: a.range("/bsn/apps/", prefix=True),
        lambda: next(iter(a.watch("/bsn/apps/b/", prefix=True, read_timeout=2))),
    ):
        with pytest.raises(EtcdAuthError, match="permission denied"):
            attempt()
    with pytest.raises(EtcdAuthError, match="authentication failed"):
        EtcdClient([server.endpoint], user="app-a", password="wrong").get("/bsn/apps/a/k")
    with pytest.raises(EtcdAuthError, match="user name is empty"):
        EtcdClient([server.endpoint]).get("/bsn/apps/a/k")
    a._token = "stale.token"  # as after a member restart
    assert a.get("/bsn/apps/a/k").value == b"v"
    # A token handed over (a warm node's claim) is used as it is: no authentication of its own...
    handed = EtcdClient([server.endpoint], user="app-a", password="pw-a", token=a.authenticate())
    paths: list[str] = []
    real = handed._call_endpoints
    handed._call_endpoints = lambda path, *rest: paths.append(path) or real(path, *rest)
    assert handed.get("/bsn/apps/a/k").value == b"v" and paths == ["/v3/kv/range"]
    # ...until etcd refuses it (expired, forgotten by a restart): then the password.
    expired = EtcdClient([server.endpoint], user="app-a", password="pw-a", token="expired.token")
    assert expired.get("/bsn/apps/a/k").value == b"v" and expired._token != "expired.token"
    assert root.member_list()[0]["name"] == "t"
