"""DCEP settlement end to end on the real tier-1 app: Docker nodes, etcd ordering, a real worker.

The product provisions the platform's tier-1 chain app (``dcep`` contract, one node per
operator's home region) through a real Celery worker; the money moves through the REST
API; a settlement batch is started twice (one batch), driven by the worker, run again after
its anchor and once more after a simulated crash with a re-signed envelope (one anchor:
on the chain and in the database). Every inclusion proof and the anchoring block are
then checked by a verifier written here from docs/dcep.md and docs/ledger-protocol.md
alone (hashlib and Ed25519, nothing from bsn.ledger or apps), and that verifier is shown
to refuse a tampered leaf, audit path and block.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.db import connections

from apps.chainapps.keys import key_private
from apps.chainapps.models import ChainApp, LedgerNode, Operation
from apps.chainapps.services import chainapp_delete
from apps.dcep.institutions import institution_ensure, tier1_provision, tier1_register_signer
from apps.dcep.models import Institution, Settlement, Transfer
from apps.dcep.selectors import deep_checks
from apps.dcep.settlement import settlement_run
from apps.dcep.tier1 import chain_batch, chain_info, chain_supply
from apps.gateway.services import gateway_block
from apps.runtime.spec import LABEL_APP
from tests.dcep.conftest import Client
from tests.factories import MembershipFactory
from tests.integration.conftest import node_get, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ISSUED = 10_000_000  # fen per operator
EXCHANGED = 2_000_000  # fen per wallet


# --------------------------------------------------------------------------- the verifier
#
# Written from the two documents only: canonical JSON, RFC 6962 trees, RFC 9162 inclusion
# verification, block hash / Merkle root / proposer signature, the settle transaction and
# the central bank's signature on it.


class Invalid(Exception):
    """The proof or the block does not verify."""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaf_hash(leaf: bytes) -> bytes:
    return _sha256(b"\x00" + leaf)


def _node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right)


def tree_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash: split at the largest power of two smaller than n."""
    if not leaves:
        return _sha256(b"")
    if len(leaves) == 1:
        return _leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))


def inclusion_root_matches(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2, step by step."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, _leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def _ed25519_ok(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_block(block: dict, node_keys: dict[str, str], *, app: str, height: int) -> None:
    """docs/ledger-protocol.md "Block": hash, Merkle root over the envelopes, proposer signature."""
    if set(block) != {"header", "hash", "signature", "txs"}:
        raise Invalid(f"block fields {sorted(block)}")
    header = block["header"]
    if header.get("app") != app or header.get("height") != height:
        raise Invalid(f"block is {header.get('app')}/{header.get('height')}, expected {app}/{height}")
    digest = _sha256(canonical(header))
    if digest.hex() != block["hash"]:
        raise Invalid("block hash is not SHA-256 of the canonical header")
    if header["tx_count"] != len(block["txs"]):
        raise Invalid("tx_count does not match the transactions")
    if tree_root([canonical(envelope) for envelope in block["txs"]]).hex() != header["merkle_root"]:
        raise Invalid("the header's Merkle root does not cover the block's transactions")
    key = node_keys.get(header["proposer"])
    if key is None:
        raise Invalid(f"proposer {header['proposer']} is not a node of the app")
    if not _ed25519_ok(key, block["signature"], digest):
        raise Invalid("the proposer's signature does not verify")


def verify_proof(proof: dict, chain: dict, *, transfer: dict) -> dict:
    """docs/dcep.md "GET transfers/{id}/proof", steps 1-4; the settle transaction's args."""
    leaf = proof["leaf"].encode("utf-8")
    said = json.loads(leaf)
    if canonical(said) != leaf:
        raise Invalid("the leaf is not canonical JSON")
    for field in ("id", "kind", "amount", "from", "to", "memo"):
        if said.get(field) != transfer[field]:
            raise Invalid(f"the leaf's {field} is {said.get(field)!r}, the transfer's {transfer[field]!r}")
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    if not inclusion_root_matches(
        leaf, proof["leaf_index"], proof["tree_size"], path, bytes.fromhex(proof["merkle_root"])
    ):
        raise Invalid("the audit path does not lead to the Merkle root")
    anchor = proof["anchor"]
    if anchor["app"] != chain["app"]:
        raise Invalid("anchored on another app")
    block = anchor["block"]
    verify_block(block, chain["node_keys"], app=chain["app"], height=anchor["height"])
    found = [env for env in block["txs"] if _sha256(canonical(env["tx"])).hex() == anchor["tx_id"]]
    if len(found) != 1:
        raise Invalid(f"{len(found)} transactions in the block have id {anchor['tx_id']}")
    tx = found[0]["tx"]
    expected = {"app": chain["app"], "contract": "dcep", "function": "settle", "signer": chain["signer"]}
    if {k: tx.get(k) for k in expected} != expected:
        raise Invalid(f"not the central bank's settle transaction: {tx}")
    args = tx["args"]
    if args.get("batch_id") != proof["settlement"] or args.get("merkle_root") != proof["merkle_root"]:
        raise Invalid("the settle transaction names another batch or root")
    if args.get("transfer_count") != proof["tree_size"]:
        raise Invalid("the settle transaction counts another number of transfers")
    if not _ed25519_ok(chain["signer_public_key"], found[0]["sig"], canonical(tx)):
        raise Invalid("the settle transaction is not signed by the central bank")
    return args


# --------------------------------------------------------------------------- helpers


def _wallet(client: Client, name: str) -> str:
    resp = client.post("wallets", {"holder_name": name, "tier": 2, "kind": "personal"})
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def _leaf(transfer_id: str, kind: str, amount: int, source: str, target: str, memo: str) -> dict:
    return {"id": transfer_id, "kind": kind, "amount": amount, "from": source, "to": target, "memo": memo}


def _item(source: str, target: str, amount: int, memo: str) -> dict:
    return {"from_wallet": source, "to_wallet": target, "amount": amount, "memo": memo}


def _ok(resp, status=201) -> dict:
    assert resp.status_code == status, resp.content
    return resp.json()


def _settle_txs(chain, batch_id: str) -> list[tuple[int, str]]:
    """Every settle transaction of this batch in the whole chain: (height, tx id)."""
    head = chain_info(chain)["height"]
    found = []
    for height in range(1, head + 1):
        for envelope in gateway_block(app=chain.app, height=height)["txs"]:
            tx = envelope["tx"]
            if tx["contract"] == "dcep" and tx["function"] == "settle" and tx["args"]["batch_id"] == batch_id:
                found.append((height, _sha256(canonical(tx)).hex()))
    return found


def _wait_operation(operation_id, timeout: float) -> Operation:
    def finished():
        op = Operation.objects.get(pk=operation_id)
        return op if op.status in ("succeeded", "failed", "cancelled") else None

    op = wait_for(finished, timeout=timeout, interval=0.25, message=f"operation {operation_id}")
    assert op.status == "succeeded", (op.last_error, op.log[-6:])
    return op


@pytest.fixture
def current_ledger_image(ledger_image) -> str:
    """The image of the current sources (the ``dcep`` contract in it): built if ``latest`` is older."""
    from apps.runtime.images import ledger_image_ensure

    return ledger_image_ensure(say=lambda message: None).tag


@pytest.fixture
def delete_left_apps(worker_factory):
    """If the test stops early, delete the tier-1 app while the worker still runs."""
    apps: list = []
    yield apps
    for app_id in apps:
        app = ChainApp.objects.filter(pk=app_id, deleted_at__isnull=True).first()
        if app is not None:
            op = chainapp_delete(app=app, actor=None, keep_data=False)
            try:
                _wait_operation(op.pk, timeout=60)
            except BaseException:  # noqa: BLE001, S110 - best effort; the session fixture sweeps the rest
                pass


@pytest.fixture
def claim_blocked(transactional_db):
    """Row locks on the unsettled transfers from another connection: a batch's claim waits."""
    conn = connections.create_connection("default")
    assert conn.settings_dict["NAME"] == connections["default"].settings_dict["NAME"]  # the test database
    table = Transfer._meta.db_table

    class Blocker:
        locked = 0

        def __enter__(self):
            conn.set_autocommit(False)
            with conn.cursor() as cur:
                cur.execute(f"SELECT id FROM {table} WHERE obligation > 0 AND settlement_id IS NULL FOR UPDATE")  # noqa: S608
                self.locked = len(cur.fetchall())
            return self

        def __exit__(self, *exc):
            conn.rollback()
            conn.set_autocommit(True)

    yield Blocker()
    conn.close()


# --------------------------------------------------------------------------- the test


def test_settlement_on_the_docker_tier1_app(
    make_regions, worker_factory, delete_left_apps, claim_blocked, docker_engine, current_ledger_image
):
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = time.monotonic() - started - sum(phases.values())

    regions = make_regions("docker", 2)
    worker_factory(regions)
    cb = institution_ensure(
        slug="pboc", name="Central Bank", kind=Institution.Kind.CENTRAL_BANK, home_region=regions[0]
    )
    op_a = institution_ensure(slug="bank-a", name="Bank A", kind=Institution.Kind.OPERATOR_BANK, home_region=regions[0])
    op_b = institution_ensure(slug="bank-b", name="Bank B", kind=Institution.Kind.OPERATOR_BANK, home_region=regions[1])
    chain = tier1_provision(regions=regions)
    delete_left_apps.append(chain.app_id)
    provision = Operation.objects.get(app_id=chain.app_id, kind=Operation.Kind.PROVISION)
    _wait_operation(provision.pk, timeout=90)
    app = ChainApp.objects.get(pk=chain.app_id)
    assert app.status == ChainApp.Status.RUNNING and app.ordering == ChainApp.Ordering.ETCD
    assert app.contract_template == "dcep"
    wait_for(lambda: tier1_register_signer(chain), timeout=30, interval=0.5, message="the central bank's key")
    phase("provision")

    bank = Client(MembershipFactory(tenant=cb.tenant, role="owner"))
    a = Client(MembershipFactory(tenant=op_a.tenant, role="owner"))
    b = Client(MembershipFactory(tenant=op_b.tenant, role="developer"))

    # ---- money: issuances, wallets, exchanges
    for slug in ("bank-a", "bank-b"):
        issued = _ok(bank.post("issuances", {"operator": slug, "amount": ISSUED}))
        assert issued["receipt"]["height"] >= 1 and len(issued["receipt"]["tx_id"]) == 64
    before = chain_supply(chain)
    assert before["allocations"] == {"bank-a": ISSUED, "bank-b": ISSUED}, before
    wa = [_wallet(a, f"a{i}") for i in range(2)]
    wb = [_wallet(b, f"b{i}") for i in range(2)]
    for client, wallets in ((a, wa), (b, wb)):
        for number in wallets:
            _ok(client.post("exchanges", {"wallet": number, "amount": EXCHANGED}))

    phase("money")

    # ---- cross-operator payments both ways, one inside bank A, a partial capture across
    expected = {"bank-a": 0, "bank-b": 0}
    interbank: dict[str, dict] = {}  # transfer id -> what its leaf must say

    def pay(client, src, dst, amount, memo=""):
        body = _ok(client.post("payments", {"from_wallet": src, "to_wallet": dst, "amount": amount, "memo": memo}))
        if body["from_operator"] != body["to_operator"]:
            expected[body["from_operator"]] -= amount
            expected[body["to_operator"]] += amount
            interbank[body["id"]] = _leaf(body["id"], "payment", amount, src, dst, memo)
        return body

    def pay_batch(client, items):  # one transaction: one created_at, so its leaves are ordered by id
        body = _ok(client.post("payments/batch", {"payments": items}))
        assert body["succeeded"] == len(items), body
        for item, result in zip(items, body["results"], strict=True):
            transfer = result["transfer"]
            expected[transfer["from_operator"]] -= item["amount"]
            expected[transfer["to_operator"]] += item["amount"]
            interbank[transfer["id"]] = _leaf(
                transfer["id"], "payment", item["amount"], item["from_wallet"], item["to_wallet"], item["memo"]
            )

    pay_batch(a, [_item(wa[1], wb[i % 2], 2_000 + i, f"batch a {i}") for i in range(3)])
    pay_batch(b, [_item(wb[1], wa[i % 2], 3_000 + i, f"batch b {i}") for i in range(2)])
    for i in range(36):
        amount = 1_000 + 137 * i
        if i % 3 == 2:
            pay(b, wb[i % 2], wa[(i + 1) % 2], amount, memo=f"b->a {i}")
        else:
            pay(a, wa[i % 2], wb[(i + 1) % 2], amount, memo=f"a->b {i}")
    pay(a, wa[0], wb[1], 88_888, memo="房租 — rent, 十二月")  # non-ASCII: canonical JSON keeps UTF-8
    intra = pay(a, wa[0], wa[1], 5_000, memo="inside bank A")  # no obligation: in no batch
    hold = _ok(a.post("holds", {"from_wallet": wa[1], "to_wallet": wb[0], "amount": 300_000, "expires_in_s": 600}))
    captured = _ok(a.post(f"holds/{hold['id']}/capture", {"amount": 120_000}), status=200)
    assert (captured["status"], captured["captured"]) == ("captured", 120_000)
    capture = _ok(a.get("transfers", {"kind": "capture"}), status=200)["results"][0]
    assert (capture["hold"], capture["to_wallet"], capture["amount"]) == (hold["id"], wb[0], 120_000)
    expected["bank-a"] -= 120_000
    expected["bank-b"] += 120_000
    interbank[capture["id"]] = _leaf(capture["id"], "capture", 120_000, f"hold:{hold['id']}", wb[0], "")
    assert _ok(a.get(f"wallets/{wa[1]}"), status=200)["held"] == 0
    assert sum(expected.values()) == 0 and expected["bank-b"] > 0

    supply = _ok(bank.get("supply"), status=200)
    assert supply["ok"], supply["checks"]
    owed = {slug: row["unsettled_in"] - row["unsettled_out"] for slug, row in supply["operators"].items()}
    assert owed == expected, owed
    not_yet = a.get(f"transfers/{capture['id']}/proof")
    assert (not_yet.status_code, not_yet.json()["code"]) == (409, "not-settled")

    phase("payments")

    # ---- start the batch twice: one batch (its claim waits on our row locks meanwhile)
    with claim_blocked as blocker:
        assert blocker.locked == len(interbank)
        first = bank.post("settlements")
        second = bank.post("settlements")
        assert first.status_code == second.status_code == 202, (first.content, second.content)
        assert first.json()["id"] == second.json()["id"]
        assert first["Location"].endswith(f"/api/v1/dcep/settlements/{first.json()['id']}")
        assert Settlement.objects.count() == 1
        assert second.json()["status"] == "pending"
    batch_id = first.json()["id"]

    # ---- the worker claims and anchors it
    def anchored():
        body = _ok(b.get(f"settlements/{batch_id}"), status=200)
        assert body["status"] != "failed", body
        return body if body["status"] == "anchored" else None

    batch = wait_for(anchored, timeout=30, interval=0.1, message="the worker to anchor the batch")
    assert batch["positions"] == {k: v for k, v in expected.items() if v}
    assert batch["transfer_count"] == len(interbank) == 43
    assert batch["anchor"]["height"] >= 1 and batch["attempts"] == 1

    phase("settle")

    # ---- run it again: still one batch, one anchor
    again = settlement_run(batch_id)
    assert again.status == Settlement.Status.ANCHORED and again.anchor_tx_id == batch["anchor"]["tx_id"]
    assert again.attempts == 1

    # ---- a crash after the chain applied it, before the row said so, and the envelope
    # re-signed meanwhile (same nonce, another tx id): the resend anchors it from the chain
    stored = again.envelope
    resent_tx = {**stored["tx"], "timestamp": stored["tx"]["timestamp"] + 1}
    seed = base64.b64decode(key_private(cb.signing_private_key_encrypted))
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(canonical(resent_tx))
    resent = {"tx": resent_tx, "sig": base64.b64encode(signature).decode()}
    Settlement.objects.filter(pk=batch_id).update(
        status=Settlement.Status.ANCHORING, anchor_tx_id="", anchor_height=None, anchor_block=None,
        anchored_at=None, envelope=resent,
    )  # fmt: skip
    supply = _ok(bank.get("supply"), status=200)  # the chain has the open batch: settled already
    assert supply["ok"], [c for c in supply["checks"] if not c["ok"]]
    assert all(supply["operators"][s]["unsettled_out"] == supply["operators"][s]["unsettled_in"] == 0 for s in expected)
    again = settlement_run(batch_id)
    assert again.status == Settlement.Status.ANCHORED, again.last_error
    assert (again.anchor_tx_id, again.anchor_height) == (batch["anchor"]["tx_id"], batch["anchor"]["height"])
    assert list(Settlement.objects.values_list("pk", "status")) == [(again.pk, "anchored")]
    assert Transfer.objects.filter(obligation__gt=0, settlement__isnull=True).count() == 0
    assert set(map(str, Transfer.objects.filter(settlement_id=batch_id).values_list("pk", flat=True))) == set(interbank)
    assert Transfer.objects.get(pk=intra["id"]).settlement_id is None
    assert _settle_txs(chain, batch_id) == [(batch["anchor"]["height"], batch["anchor"]["tx_id"])]
    after = chain_supply(chain)
    assert after["allocations"] == {slug: ISSUED + expected[slug] for slug in ("bank-a", "bank-b")}, after
    assert (after["issued"], after["withdrawn"]) == (before["issued"], before["withdrawn"])
    record = chain_batch(batch_id, chain)
    assert record["tx_id"] == batch["anchor"]["tx_id"] and record["height"] == batch["anchor"]["height"]
    assert record["positions"] == batch["positions"] and record["merkle_root"] == batch["merkle_root"]
    assert record["transfer_count"] == 43

    phase("re-runs")

    # ---- supply: joined again, nothing unsettled
    supply = _ok(bank.get("supply"), status=200)
    assert supply["ok"], [c for c in supply["checks"] if not c["ok"]]
    for slug in ("bank-a", "bank-b"):
        row = supply["operators"][slug]
        assert (row["unsettled_out"], row["unsettled_in"]) == (0, 0), row
        assert row["chain_balance"] == ISSUED + expected[slug]
    assert all(check["ok"] for check in deep_checks())

    phase("supply")

    # ---- every proof, checked by the verifier above
    info = _ok(bank.get("chain"), status=200)
    assert info["app"] == str(chain.app_id) and info["signer"] == "central-bank"
    assert set(info["node_keys"]) == {str(n.pk) for n in LedgerNode.objects.filter(app_id=chain.app_id)}
    indexes = set()
    proofs = {}
    for transfer_id, leaf in interbank.items():
        proof = _ok(a.get(f"transfers/{transfer_id}/proof"), status=200)
        args = verify_proof(proof, info, transfer=leaf)
        assert proof["settlement"] == batch_id and proof["merkle_root"] == batch["merkle_root"]
        assert args["positions"] == batch["positions"]
        indexes.add(proof["leaf_index"])
        proofs[transfer_id] = proof
    assert indexes == set(range(43))
    block = proofs[capture["id"]]["anchor"]["block"]
    assert block["hash"] == batch["anchor"]["block_hash"]
    node = LedgerNode.objects.filter(app_id=chain.app_id).first()
    assert node_get(node, f"/blocks/{block['header']['height']}").body == block

    phase("proofs")

    # ---- ... which must be able to fail
    proof = next(p for p in proofs.values() if "房租" in p["leaf"])
    leaf = interbank[json.loads(proof["leaf"])["id"]]

    def refused(mutate, transfer=leaf, chain_info=info) -> str:
        bad = copy.deepcopy(proof)
        mutate(bad)
        with pytest.raises(Invalid) as caught:
            verify_proof(bad, chain_info, transfer=transfer)
        return str(caught.value)

    def leaf_amount(p):
        p["leaf"] = p["leaf"].replace(f'"amount":{leaf["amount"]}', f'"amount":{leaf["amount"] + 1}')

    def leaf_id_swapped(p):  # another transfer's leaf presented for this one
        p["leaf"] = proofs[capture["id"]]["leaf"]

    def path_flipped(p):
        p["audit_path"][0] = ("0" if p["audit_path"][0][0] != "0" else "1") + p["audit_path"][0][1:]

    def path_shortened(p):
        p["audit_path"] = p["audit_path"][:-1]

    def index_moved(p):
        p["leaf_index"] = (p["leaf_index"] + 1) % p["tree_size"]

    def root_replaced(p):
        p["merkle_root"] = hashlib.sha256(b"another root").hexdigest()

    def header_time(p):
        p["anchor"]["block"]["header"]["timestamp"] += 1

    def header_rehashed(p):  # a consistent hash, but no longer the proposer's signature
        header = p["anchor"]["block"]["header"]
        header["timestamp"] += 1
        p["anchor"]["block"]["hash"] = hashlib.sha256(canonical(header)).hexdigest()

    def tx_in_block(p):
        settle = next(e for e in p["anchor"]["block"]["txs"] if e["tx"]["function"] == "settle")
        settle["tx"]["args"]["positions"] = {slug: -v for slug, v in settle["tx"]["args"]["positions"].items()}

    def tx_dropped(p):
        p["anchor"]["block"]["txs"] = [e for e in p["anchor"]["block"]["txs"] if e["tx"]["function"] != "settle"]

    def block_signature(p):
        p["anchor"]["block"]["signature"] = base64.b64encode(bytes(64)).decode()

    assert "amount" in refused(leaf_amount)  # not the transfer you hold
    assert "audit path" in refused(leaf_amount, transfer={**leaf, "amount": leaf["amount"] + 1})  # not in the tree
    assert "id" in refused(leaf_id_swapped)
    for mutate in (path_flipped, path_shortened, index_moved, root_replaced):
        assert "audit path" in refused(mutate)
    assert "block hash" in refused(header_time)
    assert "proposer's signature" in refused(header_rehashed)
    assert "Merkle root" in refused(tx_in_block)
    assert "tx_count" in refused(tx_dropped)
    assert "proposer's signature" in refused(block_signature)
    keys = list(info["node_keys"].values())
    swapped = {node_id: keys[-1 - i] for i, node_id in enumerate(info["node_keys"])}
    assert "proposer's signature" in refused(lambda p: None, chain_info={**info, "node_keys": swapped})
    assert "central bank" in refused(lambda p: None, chain_info={**info, "signer_public_key": keys[0]})
    verify_proof(proof, info, transfer=leaf)  # the untouched proof still verifies

    phase("tampering")

    # ---- clean up: delete the app, nothing of it left on the engine
    deleted = chainapp_delete(app=ChainApp.objects.get(pk=chain.app_id), actor=None, keep_data=False)
    _wait_operation(deleted.pk, timeout=60)
    left = docker_engine.containers.list(all=True, filters={"label": f"{LABEL_APP}={chain.app_id}"})
    assert left == [], [c.name for c in left]
    phase("delete")
    print("\n" + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items()))  # -s shows them
