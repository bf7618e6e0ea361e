"""DCEP reads: what each party may see (the one place for DCEP scoping), supply and invariants.

Visibility (docs/dcep.md, "Who sees what"):
- an operator bank sees the wallets it operates and every transfer touching them or its vault;
- an enterprise sees the corporate wallets opened for it and the transfers touching them;
- the central bank sees issuances and withdrawals (tier 1), settlements and the supply;
- anyone else sees nothing. Another party's object is therefore a 404.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import connection
from django.db.models import Q, QuerySet, Sum

from apps.dcep.models import Account, Hold, HoldRelease, Institution, Settlement, Tier1Op, Transfer
from apps.tenants.models import Tenant

_INSTITUTION_OF = "SELECT id, kind FROM dcep_institution WHERE tenant_id = %s"
# tenant id -> (institution id, kind). Every DCEP request asks; the answer never changes once
# there is one (an institution is never deleted, its tenant and kind are read-only), so each
# process remembers it. A tenant without an institution is asked again (it may become one).
_INSTITUTION_IDS: dict = {}
_INSTITUTION_IDS_MAX = 10_000


def institution_of(tenant: Tenant | None) -> Institution | None:
    """The tenant's institution with its id and kind loaded (other fields load when read: never stale)."""
    if tenant is None:
        return None
    found = _INSTITUTION_IDS.get(tenant.pk)
    if found is None:
        tenant_id = Institution._meta.get_field("tenant").get_db_prep_value(tenant.pk, connection)
        with connection.cursor() as cursor:
            cursor.execute(_INSTITUTION_OF, [tenant_id])
            found = cursor.fetchone()
        if found is None:
            return None
        if len(_INSTITUTION_IDS) >= _INSTITUTION_IDS_MAX:
            _INSTITUTION_IDS.clear()
        _INSTITUTION_IDS[tenant.pk] = found
    institution = Institution.from_db(connection.alias, ["id", "kind"], found)
    institution.tenant_id = tenant.pk
    Institution.tenant.field.set_cached_value(institution, tenant)
    return institution


_SLUGS = "SELECT i.id, t.slug FROM dcep_institution i JOIN tenants_tenant t ON t.id = i.tenant_id"


def institution_slugs() -> dict[int, str]:
    """Every institution's slug by id (a plain query: through the ORM, building it cost more than running it)."""
    with connection.cursor() as cursor:
        cursor.execute(_SLUGS)
        return dict(cursor.fetchall())


def wallets_visible_to(tenant: Tenant | None) -> QuerySet[Account]:
    wallets = Account.objects.filter(kind=Account.Kind.WALLET).select_related("operator__tenant", "holder_tenant")
    if tenant is None:
        return wallets.none()
    inst = institution_of(tenant)
    if inst is not None and inst.kind == Institution.Kind.OPERATOR_BANK:
        return wallets.filter(operator=inst)
    if inst is None:
        return wallets.filter(holder_tenant=tenant)
    return wallets.none()


def transfers_visible_to(tenant: Tenant | None) -> QuerySet[Transfer]:
    transfers = Transfer.objects.select_related(
        "from_account", "to_account", "from_operator__tenant", "to_operator__tenant", "tier1_op"
    )
    if tenant is None:
        return transfers.none()
    inst = institution_of(tenant)
    if inst is None:
        return transfers.filter(Q(from_holder=tenant) | Q(to_holder=tenant))
    if inst.kind == Institution.Kind.OPERATOR_BANK:
        return transfers.filter(Q(from_operator=inst) | Q(to_operator=inst))
    return transfers.filter(kind__in=[Transfer.Kind.ISSUANCE, Transfer.Kind.WITHDRAWAL, Transfer.Kind.REVERSAL])


def transfers_of_wallet(transfers: QuerySet[Transfer], tenant: Tenant | None, number: str) -> QuerySet[Transfer]:
    """``transfers`` touching wallet ``number`` on either side, and the captures of its holds
    (they start from the hold's account) — those only for the payer's side: the payee's side
    must not learn which wallet a capture came from. (The API's ``?wallet=`` and the portal.)"""
    payer_side = wallets_visible_to(tenant)
    own_holds = Q(hold__from_account__number=number, hold__from_account__in=payer_side)
    return transfers.filter(Q(from_account__number=number) | Q(to_account__number=number) | own_holds)


def holds_visible_to(tenant: Tenant | None) -> QuerySet[Hold]:
    holds = Hold.objects.select_related("from_account", "to_account")
    wallets = wallets_visible_to(tenant)
    return holds.filter(from_account__in=wallets)


def settlements_visible_to(tenant: Tenant | None) -> QuerySet[Settlement]:
    inst = institution_of(tenant)
    if inst is not None and inst.kind == Institution.Kind.CENTRAL_BANK:
        return Settlement.objects.all()
    if inst is not None:  # an operator sees the batches (its own position is in each)
        return Settlement.objects.all()
    return Settlement.objects.none()


# --------------------------------------------------------------------------- supply


def journal_figures() -> dict:
    """Per operator from the journal: vault, wallets, held, unsettled_out/in, pending withdrawals."""
    operators = {
        i.pk: i.slug for i in Institution.objects.filter(kind=Institution.Kind.OPERATOR_BANK).select_related("tenant")
    }
    figures = {
        slug: {"vault": 0, "wallets": 0, "held": 0, "unsettled_out": 0, "unsettled_in": 0, "withdrawing": 0}
        for slug in operators.values()
    }
    by_kind = (
        Account.objects.exclude(kind=Account.Kind.ISSUANCE).values("operator_id", "kind").annotate(s=Sum("balance"))
    )
    column = {Account.Kind.VAULT: "vault", Account.Kind.WALLET: "wallets", Account.Kind.HOLD: "held"}
    for row in by_kind:
        figures[operators[row["operator_id"]]][column[row["kind"]]] += row["s"] or 0
    unsettled = Transfer.objects.filter(obligation__gt=0).filter(
        Q(settlement__isnull=True) | ~Q(settlement__status=Settlement.Status.ANCHORED)
    )
    for row in unsettled.values("obligor_id").annotate(s=Sum("obligation")):
        figures[operators[row["obligor_id"]]]["unsettled_out"] += row["s"]
    for row in unsettled.values("obligee_id").annotate(s=Sum("obligation")):
        figures[operators[row["obligee_id"]]]["unsettled_in"] += row["s"]
    pending = Tier1Op.objects.filter(status=Tier1Op.Status.PENDING, kind=Tier1Op.Kind.WITHDRAW)
    for row in pending.values("operator_id").annotate(s=Sum("amount")):
        figures[operators[row["operator_id"]]]["withdrawing"] += row["s"]
    return figures


def journal_totals() -> dict:
    kinds = dict(Transfer.objects.values_list("kind").annotate(s=Sum("amount")).values_list("kind", "s"))
    issuance = Account.objects.filter(kind=Account.Kind.ISSUANCE).values_list("balance", flat=True).first() or 0
    return {
        "issued": kinds.get(Transfer.Kind.ISSUANCE, 0),
        "withdrawn": kinds.get(Transfer.Kind.WITHDRAWAL, 0) - kinds.get(Transfer.Kind.REVERSAL, 0),
        "issuance_account": issuance,
    }


def supply_report(chain: dict | None, *, anchored_on_chain: set[str] = frozenset()) -> dict:
    """The supply and every invariant, from the journal and (when given) the chain's ``supply``.

    ``chain`` is the ``dcep`` contract's ``supply`` query result; ``anchored_on_chain`` the
    open batches the chain has already applied (their obligations count as settled).
    """
    figures = journal_figures()
    if anchored_on_chain:
        for row in (
            Transfer.objects.filter(settlement_id__in=list(anchored_on_chain))
            .values("obligor__tenant__slug", "obligee__tenant__slug")
            .annotate(s=Sum("obligation"))
        ):
            figures[row["obligor__tenant__slug"]]["unsettled_out"] -= row["s"]
            figures[row["obligee__tenant__slug"]]["unsettled_in"] -= row["s"]
    totals = journal_totals()
    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    in_tier2 = sum(f["vault"] + f["wallets"] + f["held"] for f in figures.values())
    check(
        "journal: issued - withdrawn = vaults + wallets + held",
        totals["issued"] - totals["withdrawn"] == in_tier2,
        f"{totals['issued']} - {totals['withdrawn']} vs {in_tier2}",
    )
    check(
        "journal: the issuance account mirrors the money in tier 2",
        -totals["issuance_account"] == in_tier2,
        f"{-totals['issuance_account']} vs {in_tier2}",
    )
    operators = {}
    for slug, f in sorted(figures.items()):
        row = dict(f)
        if chain is not None:
            row["chain_balance"] = chain["allocations"].get(slug, 0)
        operators[slug] = row
    if chain is not None:
        issued, withdrawn = chain["issued"], chain["withdrawn"]
        total_chain = sum(chain["allocations"].values())
        check(
            "chain: issued - withdrawn = sum of allocations",
            issued - withdrawn == total_chain,
            f"{issued} - {withdrawn} vs {total_chain}",
        )
        pending_out = sum(f["withdrawing"] for f in figures.values())
        check(
            "tiers joined: sum of allocations = vaults + wallets + held (+ withdrawals not yet on chain)",
            total_chain == in_tier2 + pending_out,
            f"{total_chain} vs {in_tier2} + {pending_out}",
        )
        for slug, row in operators.items():
            expected = (
                row["vault"]
                + row["wallets"]
                + row["held"]
                + row["unsettled_out"]
                - row["unsettled_in"]
                + row["withdrawing"]
            )
            check(
                f"{slug}: chain = vault + wallets + held + unsettled_out - unsettled_in",
                row["chain_balance"] == expected,
                f"{row['chain_balance']} vs {expected}",
            )
        unknown = set(chain["allocations"]) - set(operators)
        check("chain: every allocation belongs to a known operator", not unknown, ", ".join(sorted(unknown)) or "ok")
    negative = Account.objects.exclude(kind=Account.Kind.ISSUANCE).filter(Q(balance__lt=0) | Q(held__lt=0)).count()
    check("no account below zero", negative == 0, f"{negative} negative")
    return {
        "issued": chain["issued"] if chain is not None else totals["issued"],
        "withdrawn": chain["withdrawn"] if chain is not None else totals["withdrawn"],
        "in_circulation": in_tier2,
        "journal": totals,
        "operators": operators,
        "checks": checks,
        "ok": all(c["ok"] for c in checks),
    }


def deep_checks() -> list[dict]:
    """The expensive invariants (``dcep_audit``): sums, entries and hash chains, over everything."""
    from apps.dcep.journal import entry_hash

    checks = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.id, a.balance, COALESCE(SUM(e.amount), 0), a.entry_count, COUNT(e.id) FROM dcep_account a "
            "LEFT JOIN dcep_entry e ON e.account_id = a.id GROUP BY a.id, a.balance, a.entry_count "
            "HAVING a.balance <> COALESCE(SUM(e.amount), 0) OR a.entry_count <> COUNT(e.id)"
        )
        bad = cursor.fetchall()
        checks.append(
            {"name": "every balance = sum of its entries", "ok": not bad, "detail": f"{len(bad)} accounts differ"}
        )
        cursor.execute("SELECT transfer_id FROM dcep_entry GROUP BY transfer_id HAVING SUM(amount) <> 0")
        unbalanced = cursor.fetchall()
        checks.append(
            {
                "name": "every transfer's legs sum to zero",
                "ok": not unbalanced,
                "detail": f"{len(unbalanced)} transfers",
            }
        )
        cursor.execute(
            "SELECT COUNT(*) FROM dcep_transfer t "
            "WHERE NOT EXISTS (SELECT 1 FROM dcep_entry e WHERE e.transfer_id = t.id)"
        )
        (no_legs,) = cursor.fetchone()
        checks.append({"name": "every transfer has entries", "ok": no_legs == 0, "detail": f"{no_legs} without"})
        cursor.execute(
            "SELECT COUNT(*) FROM dcep_entry e "
            "WHERE NOT EXISTS (SELECT 1 FROM dcep_transfer t WHERE t.id = e.transfer_id)"
        )
        (orphans,) = cursor.fetchone()
        checks.append({"name": "every entry belongs to a transfer", "ok": orphans == 0, "detail": f"{orphans} without"})
    held = defaultdict(int)
    for row in Hold.objects.filter(status=Hold.Status.PENDING).values("from_account_id").annotate(s=Sum("amount")):
        held[row["from_account_id"]] = row["s"]
    wrong_held = [
        a for a, h in Account.objects.filter(kind=Account.Kind.WALLET).values_list("id", "held") if held.get(a, 0) != h
    ]
    checks.append({"name": "held = sum of pending holds", "ok": not wrong_held, "detail": f"{len(wrong_held)} wallets"})
    broken = 0
    heads = dict(Account.objects.values_list("id", "last_hash"))
    last: dict[int, str] = {}
    for account_id, transfer_id, amount, after, seq, prev, digest in _entries_in_chain_order():
        expected_prev = last.get(account_id, "0" * 64)
        if prev != expected_prev or entry_hash(prev, str(transfer_id), account_id, seq, amount, after) != digest:
            broken += 1
        last[account_id] = digest
    broken += sum(1 for a, h in last.items() if heads.get(a) != h)
    checks.append({"name": "entries hash-chained per account", "ok": broken == 0, "detail": f"{broken} breaks"})
    checks.append(_settlement_roots_check())
    checks.append(_holds_resolved_once_check())
    return checks


def _holds_resolved_once_check() -> dict:
    """A hold resolves exactly once: one capture or release transfer once resolved, none while
    pending; and a hold an event captured or voided has exactly that one event record."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM dcep_hold h LEFT JOIN ("
            "  SELECT hold_id, COUNT(*) AS n FROM dcep_transfer WHERE hold_id IS NOT NULL AND kind IN (%s, %s)"
            "  GROUP BY hold_id) t ON t.hold_id = h.id "
            "WHERE COALESCE(t.n, 0) <> CASE WHEN h.status = %s THEN 0 ELSE 1 END",
            [Transfer.Kind.CAPTURE, Transfer.Kind.RELEASE, Hold.Status.PENDING],
        )
        (wrong,) = cursor.fetchone()
    applied = dict(
        HoldRelease.objects.filter(outcome__in=[HoldRelease.Outcome.CAPTURED, HoldRelease.Outcome.VOIDED]).values_list(
            "hold_id", "event_key"
        )
    )
    by_event = dict(Hold.objects.filter(released_by__isnull=False).values_list("pk", "released_by__key"))
    wrong += len({hold for hold, _ in set(applied.items()) ^ set(by_event.items())})
    return {"name": "every hold resolved exactly once", "ok": wrong == 0, "detail": f"{wrong} holds"}


def _settlement_roots_check() -> dict:
    """Every claimed batch's stored leaf hashes and root are those of the transfers it covers."""
    from apps.dcep.settlement import batch_leaf_hashes
    from bsn.ledger.merkle import root_of_hashes

    wrong = []
    claimed = Settlement.objects.exclude(status=Settlement.Status.PENDING).exclude(merkle_root="")
    for batch in claimed.only("pk", "merkle_root", "leaf_hashes", "transfer_count"):
        hashes = batch_leaf_hashes(batch.pk)
        if (
            len(hashes) != batch.transfer_count
            or b"".join(hashes) != bytes(batch.leaf_hashes)
            or root_of_hashes(hashes).hex() != batch.merkle_root
        ):
            wrong.append(str(batch.pk))
    return {
        "name": "settlement batches: stored leaves and root match their transfers",
        "ok": not wrong,
        "detail": ", ".join(wrong) or f"{claimed.count()} batches",
    }


def _entries_in_chain_order():
    from apps.dcep.models import Entry

    return (
        Entry.objects.order_by("account_id", "seq")
        .values_list("account_id", "transfer_id", "amount", "balance_after", "seq", "prev_hash", "hash")
        .iterator(chunk_size=10000)
    )
