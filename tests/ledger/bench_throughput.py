"""Signed tx/s into blocks on one solo node vs raw Ed25519 verifications/s on one core.

    .venv/bin/python -m tests.ledger.bench_throughput [--txs 20000] [--batch 500]

Starts a node subprocess, pre-signs every transaction (signing is the client's cost),
then measures (a) POST /tx/batch with batches of --batch from a few connections and (b)
single POST /tx from many threads. Not a pytest test (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bsn.ledger import auth
from tests.ledger.conftest import Node
from tests.ledger.helpers import Key, add_user, node_env


def raw_verifies_per_second(seconds: float = 2.0) -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public, message = key.public_key(), b"x" * 250
    signature = key.sign(message)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(500):
            public.verify(signature, message)
        count += 500
    return count / (time.perf_counter() - start)


CREDENTIAL = "bench-node-credential-0123456789"


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict]:
    """POST signed with the node's credential, as the gateway does (the node refuses strangers)."""
    authorization, _ = auth.authorization(CREDENTIAL.encode(), "POST", path, body)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "Authorization": authorization})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--txs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--single", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args()

    verifies = raw_verifies_per_second()
    print(f"raw Ed25519 verify on one core: {verifies:,.0f}/s")

    node = Node(Path(tempfile.mkdtemp()) / "data", **node_env(BSN_NODE_API_CREDENTIAL=CREDENTIAL)).start()
    try:
        alice = Key("alice")
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
        assert post(conn, "/tx", json.dumps(add_user(alice)).encode())[0] == 200

        envelopes = [alice.tx("kv", "put", {"key": f"k{i % 1000}", "value": {"i": i}}) for i in range(args.txs)]
        bodies = [json.dumps({"txs": envelopes[i : i + args.batch]}).encode() for i in range(0, args.txs, args.batch)]

        def send_batches(chunk: list[bytes]) -> int:
            c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
            done = 0
            for body in chunk:
                status, reply = post(c, "/tx/batch", body)
                assert status == 200, reply
                done += sum(r["status"] == "committed" for r in reply["receipts"])
            return done

        chunks = [bodies[i :: args.connections] for i in range(args.connections)]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.connections) as pool:
            committed = sum(pool.map(send_batches, chunks))
        elapsed = time.perf_counter() - start
        batch_rate = committed / elapsed
        print(
            f"batch ({args.batch}/request, {args.connections} connections): {committed} tx in {elapsed:.2f} s "
            f"= {batch_rate:,.0f} tx/s, ratio {batch_rate / verifies:.2f}"
        )

        singles = [json.dumps(alice.tx("kv", "put", {"key": f"s{i}", "value": i})).encode() for i in range(args.single)]

        def send_singles(chunk: list[bytes]) -> int:
            c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
            for body in chunk:
                status, reply = post(c, "/tx", body)
                assert status == 200, reply
            return len(chunk)

        chunks = [singles[i :: args.threads] for i in range(args.threads)]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            done = sum(pool.map(send_singles, chunks))
        elapsed = time.perf_counter() - start
        single_rate = done / elapsed
        print(
            f"single POST /tx ({args.threads} threads): {done} tx in {elapsed:.2f} s = {single_rate:,.0f} tx/s, "
            f"ratio {single_rate / verifies:.2f}"
        )
        height = json.loads(node.request("GET", "/chain").body)["height"]
        print(f"height {height}")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
