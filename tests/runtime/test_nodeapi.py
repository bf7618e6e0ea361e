"""The node API client (apps.runtime.nodeapi): kept connections, and what goes wrong.

Against tests.fakenode.FakeNode, which checks each request's signature and MACs its
replies as a node does; no Docker, no database.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading

import pytest

from apps.runtime import nodeapi
from apps.runtime.nodeapi import NodeAuth, NodeTimeout, NodeUnreachable, NodeUnverified, node_call
from tests.fakenode import FakeNode

CREDENTIAL = "c" * 43


@pytest.fixture
def auth() -> NodeAuth:
    return NodeAuth(key=CREDENTIAL.encode(), app_id="a", node_id="n", public_key="")


@pytest.fixture
def connects(monkeypatch) -> list:
    """The connections the client opens, one entry each."""
    made: list = []
    real = http.client.HTTPConnection.connect

    def connect(self):
        made.append((self.host, self.port))
        return real(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", connect)
    nodeapi._connections.clear()
    yield made
    nodeapi._connections.clear()


@pytest.fixture
def node():
    fake = FakeNode(lambda method, path, body: (200, {"path": path, "body": body}), credential=CREDENTIAL)
    yield fake
    fake.close()


def test_calls_to_a_node_share_one_kept_connection(node, auth, connects):
    for i in range(5):
        reply = node_call(node.endpoint, "POST", f"/tx/{i}", auth=auth, body={"i": i})
        assert reply.ok and reply.body == {"path": f"/tx/{i}", "body": {"i": i}}
    assert len(connects) == 1
    assert [path for _, path, _ in node.requests] == [f"/tx/{i}" for i in range(5)]


def test_a_connection_the_node_closed_is_replaced_and_the_call_answers(node, auth, connects):
    """The node restarts on its port (its connections end with its process): the next
    call notices the kept connection is closed and opens a new one."""
    assert node_call(node.endpoint, "GET", "/health", auth=auth).ok
    port = int(node.endpoint.rsplit(":", 1)[1])
    node.close()
    again = FakeNode(lambda method, path, body: (200, {"again": True}), credential=CREDENTIAL, port=port)
    try:
        assert node_call(again.endpoint, "GET", "/health", auth=auth).body == {"again": True}
        assert len(connects) == 2
    finally:
        again.close()


def test_a_connection_closed_as_the_request_goes_out_is_sent_again_once(node, auth, connects, monkeypatch):
    """The node closes an idle connection just as a call uses it (the check before reuse
    saw it open): the request never reached the node, so it goes once more on a new
    connection; the node sees it once."""
    assert node_call(node.endpoint, "GET", "/first", auth=auth).ok
    monkeypatch.setattr(nodeapi, "_readable", lambda sock: False)  # the race: looks open
    port = int(node.endpoint.rsplit(":", 1)[1])
    node.close()
    again = FakeNode(lambda method, path, body: (200, {"ok": 1}), credential=CREDENTIAL, port=port)
    try:
        assert node_call(again.endpoint, "POST", "/second", auth=auth, body={}).body == {"ok": 1}
        assert [path for _, path, _ in again.requests] == ["/second"]
        assert len(connects) == 2
    finally:
        again.close()


def test_nobody_listening_is_unreachable(auth, connects):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(NodeUnreachable):
        node_call(f"http://127.0.0.1:{port}", "GET", "/health", auth=auth)


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_not_kept(node, auth, connects):
    node.delay = 0.5
    with pytest.raises(NodeTimeout):
        node_call(node.endpoint, "GET", "/slow", auth=auth, read_timeout=0.1)
    node.delay = 0
    assert node_call(node.endpoint, "GET", "/health", auth=auth).ok
    assert len(connects) == 2  # the late answer of the first never reads as the second's


def test_an_answer_without_the_nodes_mac_is_unverified_whatever_it_says(auth, connects):
    stranger = FakeNode(lambda method, path, body: (200, {"status": "ok"}))  # no credential: no MAC
    try:
        with pytest.raises(NodeUnverified):
            node_call(stranger.endpoint, "GET", "/health", auth=auth)
    finally:
        stranger.close()


def test_only_http_endpoints(auth):
    with pytest.raises(NodeUnreachable, match="not an http"):
        node_call("https://127.0.0.1:1", "GET", "/health", auth=auth)


def test_a_reply_cut_off_is_unreachable(auth, connects):
    """Something accepts, reads the request and hangs up half-way through a reply."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(NodeUnreachable):
            node_call(f"http://127.0.0.1:{listener.getsockname()[1]}", "GET", "/health", auth=auth)
    finally:
        thread.join(5)
        listener.close()


class _Conn:
    """Stands in for an HTTPConnection in the pool's own bookkeeping."""

    def __init__(self) -> None:
        self.sock = None
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_the_pool_keeps_a_few_per_node_and_a_bound_in_all(monkeypatch):
    monkeypatch.setattr(nodeapi, "_readable", lambda sock: False)
    pool = nodeapi._Connections()
    monkeypatch.setattr(pool, "PER_ENDPOINT", 2)
    monkeypatch.setattr(pool, "TOTAL", 3)
    conns = [_Conn() for _ in range(5)]
    for conn in conns[:3]:
        conn.sock = object()
        pool.give("h", 1, conn)
    assert conns[2].closed and not conns[0].closed  # a third for one node is closed
    conns[3].sock = conns[4].sock = object()
    pool.give("h", 2, conns[3])
    pool.give("h", 3, conns[4])  # over the total: node 1's oldest goes
    assert conns[0].closed and not conns[1].closed
    assert pool.take("h", 1) is conns[1] and pool.take("h", 1) is None
    assert pool.take("h", 2) is conns[3]


def test_a_forked_child_does_not_share_the_parents_connections(node, auth, connects):
    assert node_call(node.endpoint, "GET", "/health", auth=auth).ok
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its pool is empty
        os.write(write, b"1" if nodeapi._connections._count == 0 else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert nodeapi._connections._count == 1  # the parent's is kept, and still works
    assert node_call(node.endpoint, "GET", "/health", auth=auth).ok
    assert len(connects) == 1
