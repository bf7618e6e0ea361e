"""The DCEP operator commands through call_command, against the real tier-1 node of conftest."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from rest_framework.test import APIClient

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.keys import key_private
from apps.chainapps.models import ChainApp, Framework
from apps.dcep import services
from apps.dcep.models import Account, Institution, Settlement, Tier1Chain, Transfer
from apps.dcep.proofcheck import proof_checks
from apps.dcep.settlement import settlement_start, transfer_proof
from apps.dcep.tier1 import issuance_create
from apps.gateway.services import gateway_submit
from apps.regions.models import Region
from bsn.ledger.tx import make_tx, sign_tx

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def table(output: str) -> dict[str, dict]:
    """dcep_setup's table: {slug: {kind, home, owner, password, token}}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("INSTITUTION"))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        slug, kind, home, owner, password, token = line.split()
        rows[slug] = {"kind": kind, "home": home, "owner": owner, "password": password, "token": token}
    return rows


def api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def actor(slug: str) -> services.Actor:
    inst = Institution.objects.select_related("tenant").get(tenant__slug=slug)
    return services.Actor(tenant=inst.tenant, institution=inst)


def cross_payments(amounts=(120_000,)) -> list[str]:
    """bank-a pays bank-b once per amount (issuance, wallets, exchange first); the payment ids."""
    issuance_create(operator_slug="bank-a", amount=1_000_000, request_key="test:issue-a")
    a, b = actor("bank-a"), actor("bank-b")
    wa = services.wallet_open(actor=a, holder_name="Alice", tier=2, kind="personal").number
    wb = services.wallet_open(actor=b, holder_name="Bob", tier=2, kind="personal").number
    services.exchange_create(actor=a, wallet=wa, amount=500_000)
    paid = [services.payment_create(actor=a, from_wallet=wa, to_wallet=wb, amount=n, memo="rent") for n in amounts]
    return [p["id"] for p in paid]


# --------------------------------------------------------------------------- dcep_setup


def test_setup_is_idempotent_and_its_tokens_work(tier1):
    first = run("dcep_setup", "--operators", "2", "--wallets", "4", "--wait", "30")
    rows = table(first)
    assert set(rows) == {"pboc", "bank-1", "bank-2"}
    assert rows["pboc"]["kind"] == "central_bank" and rows["bank-1"]["kind"] == "operator_bank"
    assert all(r["owner"] == slug and r["password"] != "(unchanged)" for slug, r in rows.items())
    assert Account.objects.filter(kind=Account.Kind.WALLET).count() == 4
    assert "the tier-1 chain runs" in first

    second = table(run("dcep_setup", "--operators", "2", "--wallets", "4", "--wait", "30"))
    assert set(second) == set(rows)
    assert all(r["password"] == "(unchanged)" for r in second.values()), "existing owners keep their password"
    assert second["bank-1"]["token"] != rows["bank-1"]["token"], "every run prints a fresh token"
    assert Institution.objects.filter(tenant__slug__in=["pboc", "bank-1", "bank-2"]).count() == 3
    assert Tier1Chain.objects.count() == 1
    assert Account.objects.filter(kind=Account.Kind.WALLET).count() == 4, "demo wallets only on the first run"

    # Tokens of both runs work: the operator sees its demo wallets, the central bank issues.
    for token in (rows["bank-1"]["token"], second["bank-1"]["token"]):
        wallets = api(token).get("/api/v1/dcep/wallets").json()["results"]
        assert len(wallets) == 2 and all(w["operator"] == "bank-1" for w in wallets)
    resp = api(second["pboc"]["token"]).post(
        "/api/v1/dcep/issuances", {"operator": "bank-1", "amount": 10_000}, format="json", HTTP_IDEMPOTENCY_KEY="s1"
    )
    assert resp.status_code == 201, resp.content


def test_setup_without_waiting_seeds_regions_and_money_calls_answer_503(db):
    ensure_builtin_framework(Framework)
    assert not Region.objects.exists()
    output = run("dcep_setup", "--operators", "3", "--wallets", "0", "--wait", "0", "--driver", "process")
    assert "seeded cn-beijing, cn-shanghai, cn-guangzhou (driver: process)" in output
    assert "503 with Retry-After" in output
    rows = table(output)
    # Home regions spread over the three regions; with process regions the tier-1 app gets one node.
    assert [rows[s]["home"] for s in ("pboc", "bank-1", "bank-2", "bank-3")] == [
        "cn-beijing",
        "cn-guangzhou",
        "cn-shanghai",
        "cn-beijing",
    ]
    app = ChainApp.objects.get(pk=Tier1Chain.objects.get().app_id)
    assert list(app.nodes.values_list("region__code", flat=True)) == ["cn-beijing"]
    resp = api(rows["pboc"]["token"]).post(
        "/api/v1/dcep/issuances", {"operator": "bank-1", "amount": 100}, format="json", HTTP_IDEMPOTENCY_KEY="x"
    )
    assert resp.status_code == 503 and resp["Retry-After"], resp.content
    assert resp.json()["code"] == "tier1-unavailable"


def test_setup_waits_for_the_tier1_app_and_names_a_failure(db):
    ensure_builtin_framework(Framework)
    out = io.StringIO()
    with pytest.raises(CommandError, match="not running after 1 s"):  # no worker here: it stays pending
        call_command("dcep_setup", "--wait", "1", "--driver", "process", "--wallets", "0", stdout=out)
    assert "tier-1 app" in out.getvalue() and "pending" in out.getvalue()
    assert len(table(out.getvalue())) == 3, "the tokens are printed even so"

    app = ChainApp.objects.get(pk=Tier1Chain.objects.get().app_id)
    app.operations.update(status="failed", last_error="engine said no")
    ChainApp.objects.filter(pk=app.pk).update(status=ChainApp.Status.FAILED)
    with pytest.raises(CommandError, match="tier-1 provisioning failed: engine said no"):
        run("dcep_setup", "--wait", "5", "--wallets", "0")


def test_setup_refuses_bad_input(db):
    with pytest.raises(CommandError, match="--operators"):
        run("dcep_setup", "--operators", "0")
    with pytest.raises(CommandError, match="--wait"):
        run("dcep_setup", "--wait", "-1")


# --------------------------------------------------------------------------- dcep_issue


def test_issue_prints_the_transfer_and_receipt(tier1):
    output = run("dcep_issue", "bank-a", "250000")
    transfer_id = re.search(r"transfer ([0-9a-f-]{36})", output).group(1)
    tx_id = re.search(r"tx ([0-9a-f]{64})", output).group(1)
    height = int(re.search(r"height (\d+)", output).group(1))
    transfer = Transfer.objects.get(pk=transfer_id)
    assert (transfer.kind, transfer.amount, transfer.tier1_tx_id, transfer.tier1_height) == (
        "issuance",
        250_000,
        tx_id,
        height,
    )
    assert Account.objects.get(kind=Account.Kind.VAULT, operator__tenant__slug="bank-a").balance == 250_000


@pytest.mark.parametrize("amount", ["12.5", "-5", "0", "1e3", "abc"])
def test_issue_refuses_an_amount_that_is_not_whole_fen(tier1, amount):
    with pytest.raises(CommandError, match="positive whole number of fen"):
        run("dcep_issue", "bank-a", amount)
    assert not Transfer.objects.exists()


def test_issue_refuses_an_unknown_operator(tier1):
    with pytest.raises(CommandError, match="No operator bank 'nope'"):
        run("dcep_issue", "nope", "100")


# --------------------------------------------------------------------------- dcep_settle, dcep_audit


def test_settle_then_audit_passes(tier1):
    cross_payments((120_000, 30_000))
    before = run("dcep_audit")
    assert "all " in before and "checks pass" in before
    assert re.search(r"^bank-a\s+1000000\s+500000\s+350000\s+0\s+150000\s+0\s+0$", before, re.M), before

    output = run("dcep_settle")
    assert "anchored" in output and "transfers:   2" in output
    assert "positions:   bank-a -150000, bank-b +150000" in output
    batch = Settlement.objects.get()
    assert batch.status == "anchored" and batch.merkle_root in output and batch.anchor_tx_id in output
    assert f"height {batch.anchor_height}, block {batch.anchor_block['hash']}" in output
    assert "nothing to settle" in run("dcep_settle")

    after = run("dcep_audit", "--no-deep")
    assert "checks pass" in after and "hash-chained" not in after
    assert re.search(r"^bank-a\s+850000\s+500000\s+350000\s+0\s+0\s+0\s+0$", after, re.M), after


def test_audit_drives_an_open_batch(tier1):
    cross_payments()
    batch, created = settlement_start()
    assert created and batch.status == "pending"  # no worker here: the audit finishes it
    output = run("dcep_audit")
    assert f"open settlement batch {batch.pk}: anchored" in output and "checks pass" in output


def test_audit_fails_when_the_chain_disagrees_with_the_journal(tier1):
    chain, _node = tier1
    cross_payments()
    # An issuance straight on the chain with the central bank's key: the journal never saw it.
    bank = Institution.objects.get(kind=Institution.Kind.CENTRAL_BANK)
    args = {"operator": "bank-a", "amount": 5_000, "ref": "rogue"}
    tx = make_tx(str(chain.app_id), "dcep", "issue", args, chain.signer)
    receipt = gateway_submit(app=chain.app, envelope=sign_tx(tx, key_private(bank.signing_private_key_encrypted)))
    assert receipt["status"] == "committed", receipt

    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("dcep_audit", stdout=out)
    assert "bank-a: chain = vault + wallets + held + unsettled_out - unsettled_in" in str(failed.value)
    assert "tiers joined" in str(failed.value)
    assert "bank-b" not in str(failed.value)
    assert "FAIL  bank-a: chain" in out.getvalue() and "1005000 vs 1000000" in out.getvalue()


def test_audit_finds_an_entry_without_its_transfer(tier1):
    """The entry → transfer reference has no foreign-key constraint: the audit is what checks it."""
    cross_payments()
    with connection.cursor() as cursor:  # a leg written for a transfer that does not exist
        cursor.execute(
            "INSERT INTO dcep_entry (transfer_id, account_id, amount, balance_after, seq, prev_hash, hash) "
            "SELECT %s, account_id, 0, balance_after, seq + 1000, hash, hash FROM dcep_entry LIMIT 1",
            [str(uuid.uuid4())],
        )
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("dcep_audit", stdout=out)
    assert "FAIL  every entry belongs to a transfer" in out.getvalue(), out.getvalue()


# --------------------------------------------------------------------------- dcep_verify


def test_verify_passes_for_a_settled_transfer(tier1):
    first, second = cross_payments((120_000, 30_000))
    with pytest.raises(CommandError, match="no settlement batch yet"):
        run("dcep_verify", first)
    run("dcep_settle")
    for transfer_id in (first, second):
        output = run("dcep_verify", transfer_id)
        assert output.count("ok  ") == 5 and "FAIL" not in output
        assert f"verified: transfer {transfer_id}" in output


def test_verify_fails_on_a_tampered_anchor_block(tier1):
    (payment,) = cross_payments()
    run("dcep_settle")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dcep_settlement SET anchor_block = jsonb_set(anchor_block, '{header,timestamp}', '1')")
    out = io.StringIO()
    with pytest.raises(CommandError, match="does not verify: anchoring block"):
        call_command("dcep_verify", payment, stdout=out)
    assert "FAIL  anchoring block (hash, Merkle root, proposer signature): block" in out.getvalue()
    assert "ok    Merkle inclusion" in out.getvalue(), "only the block is wrong"


def test_verify_fails_when_another_leaf_of_the_batch_changed(tier1):
    first, _second = cross_payments((120_000, 30_000))
    run("dcep_settle")
    batch = Settlement.objects.get()
    index = transfer_proof(Transfer.objects.get(pk=first))["leaf_index"]
    hashes = bytearray(batch.leaf_hashes)
    other = 1 - index
    hashes[other * 32 : other * 32 + 32] = bytes(32)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dcep_settlement SET leaf_hashes = %s WHERE id = %s", [bytes(hashes), batch.pk])
    out = io.StringIO()
    with pytest.raises(CommandError, match="does not verify: Merkle inclusion"):
        call_command("dcep_verify", first, stdout=out)
    assert "FAIL  Merkle inclusion" in out.getvalue()


def test_verify_refuses_bad_ids(tier1):
    with pytest.raises(CommandError, match="not a transfer id"):
        run("dcep_verify", "12")
    with pytest.raises(CommandError, match="no transfer"):
        run("dcep_verify", "00000000-0000-0000-0000-000000000000")


def test_proof_checks_name_what_was_changed(tier1):
    """The pure checker: a changed amount in the leaf, or a changed settle transaction, is caught by name."""
    from apps.dcep.management.commands.dcep_verify import expected_for

    (payment,) = cross_payments()
    run("dcep_settle")
    transfer = Transfer.objects.select_related("from_account", "to_account").get(pk=payment)
    proof, expected = transfer_proof(transfer), expected_for(transfer)
    assert all(c.ok for c in proof_checks(proof, expected))

    leaf = json.loads(proof["leaf"])
    forged = {**proof, "leaf": json.dumps({**leaf, "amount": 1}, sort_keys=True, separators=(",", ":"))}
    failed = {c.name for c in proof_checks(forged, expected) if not c.ok}
    assert failed == {"leaf is the transfer", "Merkle inclusion"}

    block = json.loads(json.dumps(proof["anchor"]["block"]))
    (envelope,) = [e for e in block["txs"] if e["tx"]["function"] == "settle"]
    sig = envelope["sig"]
    envelope["sig"] = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]  # still base64, another signature
    forged = {**proof, "anchor": {**proof["anchor"], "block": block}}
    failed = {c.name for c in proof_checks(forged, expected) if not c.ok}
    assert failed == {
        "anchoring block (hash, Merkle root, proposer signature)",
        "transaction signed by the central bank",
    }
