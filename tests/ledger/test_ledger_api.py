"""The node's HTTP API, against a real node process on loopback."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest


def test_health_names_the_node(node):
    reply = node.request("GET", "/health")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"status": "ok", "node_id": "node-1", "app_id": "app-1"}


def test_info_counts_keys(node):
    node.put("a", 1)
    node.put("b", 2)
    info = node.request("GET", "/info").json()
    assert info["node_id"] == "node-1"
    assert info["app_id"] == "app-1"
    assert info["contract"] == "kv"
    assert info["version"]
    assert info["keys"] == 2
    assert info["started_at"].endswith("Z")


@pytest.mark.parametrize(
    "value", [None, 0, -1.5, "text", "ünïcødé ✓", True, [], [1, [2, {"x": None}]], {"nested": {"deep": [1, 2]}}]
)
def test_put_then_get_round_trips_any_json(node, value):
    put = node.put("k", value)
    assert put.status == 200
    assert put.json() == {"key": "k", "value": value}
    get = node.get("k")
    assert get.status == 200
    assert get.json() == {"key": "k", "value": value}


def test_put_overwrites(node):
    node.put("k", 1)
    node.put("k", 2)
    assert node.get("k").json()["value"] == 2


def test_keys_are_percent_decoded(node):
    for key in ("a/b", "with space", "ключ", "x%y", "a" * 256):
        assert node.put(key, key).status == 200
        assert node.get(key).json() == {"key": key, "value": key}


def test_delete(node):
    node.put("k", 1)
    reply = node.delete("k")
    assert reply.status == 200
    assert reply.json() == {"key": "k", "deleted": True}
    assert node.get("k").status == 404
    assert node.delete("k").status == 404


def test_missing_key_is_404_json(node):
    reply = node.get("nope")
    assert reply.status == 404
    assert "error" in reply.json()


@pytest.mark.parametrize("path", ["/", "/nope", "/kv", "/health/x", "/info/"])
def test_unknown_path_is_404(node, path):
    reply = node.request("GET", path)
    assert reply.status == 404
    assert "error" in reply.json()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/health", "GET"),
        ("DELETE", "/info", "GET"),
        ("POST", "/kv/k", "GET, PUT, DELETE"),
        ("PATCH", "/kv/k", "GET, PUT, DELETE"),
    ],
)
def test_wrong_method_is_405(node, method, path, allow):
    reply = node.request(method, path, raw=b"{}")
    assert reply.status == 405
    assert reply.headers["Allow"] == allow
    assert "error" in reply.json()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"value"',
        b"{}",
        b'{"valu": 1}',
        b'{"value": NaN}',
        b'{"value": Infinity}',
        b"\xff\xfe",
    ],
)
def test_bad_body_is_400(node, raw):
    reply = node.request("PUT", "/kv/k", raw=raw)
    assert reply.status == 400
    assert reply.json()["error"]
    assert node.get("k").status == 404


def test_key_too_long_is_400(node):
    reply = node.put("k" * 257, 1)
    assert reply.status == 400
    assert "256" in reply.json()["error"]


@pytest.mark.parametrize("key", ["", "a\nb", "tab\there"])
def test_invalid_key_is_400(node, key):
    assert node.put(key, 1).status == 400


def test_body_over_one_mib_is_400_and_not_stored(node):
    big = b'{"value": "' + b"x" * (1024 * 1024) + b'"}'
    reply = node.request("PUT", "/kv/big", raw=big)
    assert reply.status == 400
    assert node.get("big").status == 404


def test_body_just_under_one_mib_is_accepted(node):
    value = "x" * (1024 * 1024 - 100)
    assert node.put("big", value).status == 200
    assert node.get("big").json()["value"] == value


def test_malformed_request_line_gets_json_error(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # the node closes the connection after an error
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b'"error"' in body


def test_keep_alive_serves_several_requests_on_one_connection(node):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
    try:
        for i in range(3):
            conn.request("PUT", f"/kv/k{i}", body=b'{"value": 1}')
            assert conn.getresponse().read() and True
        conn.request("GET", "/info")
        assert b'"keys":3' in conn.getresponse().read()
    finally:
        conn.close()


def test_concurrent_writes_all_land(node):
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda i: node.put(f"k{i}", i).status, range(200)))
    assert statuses == [200] * 200
    assert node.request("GET", "/info").json()["keys"] == 200


def test_sigterm_stops_fast_and_cleanly(node):
    started = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - started < 1.0
    assert "stopped" in node.stderr


def test_huge_declared_body_is_refused_without_reading_it(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert b"Connection: close" in data
