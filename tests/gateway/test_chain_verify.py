"""manage.py bsn_chain_verify on a good chain and on chains tampered with in each possible way."""

from __future__ import annotations

import base64
import copy
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.chainapps.models import LedgerNode
from bsn.client import Client, generate_key
from tests.api.conftest import finish_open_operations, make_app
from tests.gateway.conftest import attach_sim

pytestmark = pytest.mark.django_db


def verify(ref: str) -> str:
    out = io.StringIO()
    call_command("bsn_chain_verify", ref, stdout=out)
    return out.getvalue()


@pytest.fixture
def chain(app, sim, alice, alice_key):
    """alice's puts in a few blocks, one a batch of three."""
    client = Client("http://unused", "t", str(app.pk), "alice", alice_key[0])
    sim.commit([client.sign("kv", "put", {"key": f"k{i}", "value": i}) for i in range(3)])
    sim.commit([client.sign("kv", "put", {"key": "solo", "value": "x"})])
    sim.commit([])  # an empty block: Merkle root of no leaves
    return sim


def test_a_good_chain_verifies_by_id_and_by_tenant_and_name(app, chain):
    out = verify(str(app.pk))
    assert out.startswith("ok:") and "height 4" in out and "5 transaction(s)" in out
    assert chain.head in out
    assert verify(f"{app.tenant.slug}/{app.name}").startswith("ok:")


def _tamper(sim, height: int, change) -> None:
    block = copy.deepcopy(sim.blocks[height - 1])
    change(block)
    sim.blocks[height - 1] = block


def _resign_header(sim, block) -> None:
    """A forger without the node key can re-hash, but not re-sign validly."""
    import hashlib

    from tests.fakenode import canonical

    block["hash"] = hashlib.sha256(canonical(block["header"])).hexdigest()


@pytest.mark.parametrize(
    "height, change, message",
    [
        (2, lambda b: b["txs"][0]["tx"]["args"].update(value=99), "merkle_root"),
        (2, lambda b: b["txs"].pop(), "tx_count"),
        (3, lambda b: b["header"].update(timestamp=1), "is not SHA-256(canonical(header))"),
        (3, lambda b: b.update(signature=base64.b64encode(bytes(64)).decode()), "signature does not verify"),
        (3, lambda b: b.update(signature="???"), "signature is not base64"),
        (2, lambda b: b["header"].update(app="00000000-0000-0000-0000-000000000000"), "belongs to app"),
    ],
)
def test_tampered_blocks_fail_with_one_clear_line(app, chain, height, change, message):
    _tamper(chain, height, change)
    with pytest.raises(CommandError) as excinfo:
        verify(str(app.pk))
    text = str(excinfo.value)
    assert "\n" not in text and f"block {height}" in text and message in text


def test_a_rewritten_block_with_a_new_hash_breaks_the_link_or_the_signature(app, chain):
    def rewrite(block):
        block["header"]["timestamp"] += 1
        _resign_header(chain, block)

    _tamper(chain, 3, rewrite)
    with pytest.raises(CommandError, match="block 3: signature does not verify"):
        verify(str(app.pk))


def test_a_block_signed_by_a_key_the_database_does_not_know_fails(app, chain):
    LedgerNode.objects.filter(app=app).update(public_key=generate_key()[1])
    # The node's identity proof is checked against the stored key before any block.
    with pytest.raises(CommandError, match="does not prove it is node"):
        verify(str(app.pk))


def test_a_chain_whose_blocks_were_swapped_fails_on_the_link(app, chain):
    chain.blocks[1], chain.blocks[2] = chain.blocks[2], chain.blocks[1]
    with pytest.raises(CommandError, match="block 2: header says height 3"):
        verify(str(app.pk))


def test_nodes_that_disagree_fail(owner, regions, alice_key):
    app = make_app(owner, "pair", regions=("cn-beijing", "cn-shanghai"))
    finish_open_operations(app.pk)
    first, second = (attach_sim(n) for n in app.nodes.order_by("region__code"))
    try:
        first.commit([])
        with pytest.raises(CommandError) as out_line:
            verify(str(app.pk))
        assert "nodes disagree on the head" in str(out_line.value)
        assert "(cn-beijing) at 1/" in str(out_line.value) and "(cn-shanghai) at 0/" in str(out_line.value)
    finally:
        first.close()
        second.close()


def test_unreachable_node_and_unknown_app_fail(app, chain):
    LedgerNode.objects.filter(app=app).update(endpoint="http://127.0.0.1:9")
    with pytest.raises(CommandError, match="cn-beijing"):
        verify(str(app.pk))
    with pytest.raises(CommandError, match="no app"):
        verify("nobody/nothing")
    with pytest.raises(CommandError, match="neither an app id"):
        verify("just-a-name")
