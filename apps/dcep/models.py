"""DCEP: institutions, the tier-2 double-entry journal (accounts, transfers, entries),
holds, settlements, tier-1 chain operations and idempotency records.

Money is an integer number of fen everywhere. See docs/dcep.md for the whole picture.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from apps.common.models import TimeStamped
from apps.regions.models import Region
from apps.tenants.models import Tenant


class Institution(TimeStamped):
    """The central bank or an operator bank: a tenant of that kind with a home region."""

    class Kind(models.TextChoices):
        CENTRAL_BANK = "central_bank"
        OPERATOR_BANK = "operator_bank"

    tenant = models.OneToOneField(Tenant, on_delete=models.PROTECT, related_name="institution")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    home_region = models.ForeignKey(Region, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # The central bank's tier-1 signing key (signs issue, withdraw and settle on the chain);
    # public part registered as an app user of the tier-1 app, private part only encrypted.
    signing_public_key = models.CharField(max_length=64, blank=True)
    signing_private_key_encrypted = models.TextField(blank=True)

    class Meta:
        ordering = ["kind", "tenant__slug"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(kind="central_bank"), name="dcep_one_central_bank")
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug} ({self.kind})"

    @property
    def slug(self) -> str:
        return self.tenant.slug


class Tier1Chain(TimeStamped):
    """The one chain app the platform runs for tier 1 (the ``dcep`` contract)."""

    app = models.OneToOneField("chainapps.ChainApp", on_delete=models.PROTECT, related_name="+")
    signer = models.CharField(max_length=64, default="central-bank")
    # True once the central bank's key is an active user of the app (tier-1 writes possible).
    signer_registered = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"tier-1 chain {self.app_id}"


class Account(models.Model):
    """One account of the journal: a wallet, an operator's vault or holds, or the issuance account.

    ``balance`` is always the sum of the account's entries. For a wallet that is what it
    can spend (the API's ``available``); ``held`` is reserved by pending holds, whose
    money sits in each hold's own account (so holds never contend on a shared row), and
    the API's wallet ``balance`` is ``balance + held``. Only the issuance account (the central bank's contra account,
    ``-(issued - withdrawn)``) is negative; the database refuses a negative balance on
    every other account.
    """

    class Kind(models.TextChoices):
        ISSUANCE = "issuance"
        VAULT = "vault"
        HOLD = "hold"  # one per hold: the reserved money, drained when the hold resolves
        WALLET = "wallet"

    class WalletKind(models.TextChoices):
        PERSONAL = "personal"
        CORPORATE = "corporate"

    class Status(models.TextChoices):
        ACTIVE = "active"
        FROZEN = "frozen"
        CLOSED = "closed"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    operator = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.PROTECT, related_name="accounts")
    # Wallets only: a 16-digit number with a Luhn check digit (the id in URLs).
    number = models.CharField(max_length=16, null=True, blank=True, unique=True)
    holder_name = models.CharField(max_length=200, blank=True)
    holder_tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="dcep_wallets"
    )
    wallet_kind = models.CharField(max_length=10, choices=WalletKind.choices, blank=True)
    tier = models.PositiveSmallIntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    balance = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    # Outgoing total of ``day_out_date`` (UTC), for the daily cap.
    day_out_date = models.DateField(null=True, blank=True)
    day_out = models.BigIntegerField(default=0)
    # Hash of the account's last entry: entries are chained per account, so two payments
    # on other accounts never wait for each other (no global hash-chain head).
    last_hash = models.CharField(max_length=64, default="0" * 64)
    entry_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0) | Q(kind="issuance"), name="dcep_account_not_negative"),
            models.CheckConstraint(condition=Q(held__gte=0), name="dcep_account_held_not_negative"),
            models.UniqueConstraint(fields=["operator", "kind"], condition=Q(kind="vault"), name="dcep_one_vault"),
            models.UniqueConstraint(fields=["kind"], condition=Q(kind="issuance"), name="dcep_one_issuance"),
        ]
        indexes = [models.Index(fields=["operator", "kind"]), models.Index(fields=["holder_tenant", "kind"])]

    def __str__(self) -> str:
        return self.number or f"{self.kind}:{self.operator_id or '-'}"


class Wallet(Account):
    """A wallet account (``kind=wallet``) as the operator's Django admin shows it; no table of its own."""

    class Meta:
        proxy = True


class Settlement(TimeStamped):
    """One interbank net-settlement batch, anchored on the tier-1 chain."""

    class Status(models.TextChoices):
        PENDING = "pending"  # claimed no transfers yet
        ANCHORING = "anchoring"  # transfers claimed, positions and root fixed, chain tx not confirmed
        ANCHORED = "anchored"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    positions = models.JSONField(default=dict, blank=True)  # {operator slug: signed fen}
    transfer_count = models.PositiveIntegerField(default=0)
    merkle_root = models.CharField(max_length=64, blank=True)
    # sha256 leaf hashes of the batch in leaf order (32 bytes each): proofs need no recomputation.
    leaf_hashes = models.BinaryField(blank=True, default=b"")
    anchor_tx_id = models.CharField(max_length=64, blank=True)
    anchor_height = models.PositiveBigIntegerField(null=True, blank=True)
    anchor_block = models.JSONField(null=True, blank=True)
    envelope = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)
    started_by = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    anchored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one batch is open at a time: a second start finds the first.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status__in=["pending", "anchoring"]), name="dcep_one_open_settlement"
            )
        ]

    def __str__(self) -> str:
        return f"settlement {self.pk} ({self.status})"


class Hold(TimeStamped):
    """Funds reserved from one wallet for another (two-phase): captured, voided or expired exactly once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CAPTURED = "captured"
        VOIDED = "voided"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="hold")
    from_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds_out")
    to_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds_in")
    amount = models.BigIntegerField()
    captured = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    expires_at = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Programmable payments (apps.dcep.programmable): a hold bound to a chain app's events is
    # captured in full when ``capture_event`` is emitted with a payload matching
    # ``capture_match`` (equality on each field), voided on ``void_event``/``void_match``.
    release_app = models.ForeignKey(
        "chainapps.ChainApp", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    release_contract = models.CharField(max_length=32, blank=True)  # "" = an event of any contract of the app
    capture_event = models.CharField(max_length=64, blank=True)
    capture_match = models.JSONField(null=True, blank=True)
    capture_signer = models.CharField(max_length=64, blank=True)  # "" = signed by any app user
    void_event = models.CharField(max_length=64, blank=True)
    void_match = models.JSONField(null=True, blank=True)
    void_signer = models.CharField(max_length=64, blank=True)
    # The event that captured or voided it: {"key", "app", "name", "tx_id", "height"} (null otherwise).
    released_by = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="dcep_hold_positive"),
            models.CheckConstraint(
                condition=Q(release_app__isnull=True) | ~Q(capture_event="") | ~Q(void_event=""),
                name="dcep_hold_release_rule_has_an_event",
            ),
        ]
        indexes = [
            # The consumer's look-up: the event-bound holds of one app (most holds have no app: not indexed).
            models.Index(
                fields=["release_app", "status"], condition=Q(release_app__isnull=False), name="dcep_hold_release_app"
            )
        ]

    def __str__(self) -> str:
        return f"hold {self.pk} ({self.status})"


class HoldRelease(models.Model):
    """What one chain event did to one event-bound hold: the record that makes it exactly once.

    ``(hold, event_key)`` is unique, so a redelivered event (the reader is at least once, and
    two workers may read the same blocks) finds its earlier record and does nothing; at most
    one record per hold captured or voided it (a partial unique index).
    """

    class Outcome(models.TextChoices):
        CAPTURED = "captured"
        VOIDED = "voided"
        IGNORED = "ignored"  # the hold was already resolved (by hand, by expiry or by another event)
        REFUSED = "refused"  # the payee's wallet refused the money (frozen, closed, over its cap): still pending

    id = models.BigAutoField(primary_key=True)
    hold = models.ForeignKey(Hold, on_delete=models.PROTECT, related_name="event_releases", db_index=False)
    event_key = models.CharField(max_length=200)  # ChainEvent.key: "<app>:<height>:<index>:<seq>"
    event_name = models.CharField(max_length=64)
    tx_id = models.CharField(max_length=64)
    height = models.PositiveBigIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["hold", "event_key"], name="dcep_hold_release_once_per_event"),
            models.UniqueConstraint(
                fields=["hold"], condition=Q(outcome__in=["captured", "voided"]), name="dcep_hold_released_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_key} -> hold {self.hold_id}: {self.outcome}"


class Transfer(models.Model):
    """One movement of money; its entries (legs) sum to zero.

    Cross-operator payments (and captures) carry an obligation ``obligor`` → ``obligee``
    of ``obligation`` fen until a settlement batch covers them. Immutable once written,
    except that ``settlement`` is set once (the database enforces both on PostgreSQL).
    """

    class Kind(models.TextChoices):
        ISSUANCE = "issuance"
        WITHDRAWAL = "withdrawal"
        EXCHANGE = "exchange"
        REDEMPTION = "redemption"
        PAYMENT = "payment"
        HOLD = "hold"
        CAPTURE = "capture"
        RELEASE = "release"
        REVERSAL = "reversal"  # a withdrawal the chain refused, put back into the vault

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount = models.BigIntegerField()
    # Foreign keys of this table get no index of their own where a composite index below
    # starts with them (or nothing looks rows up by them): every index costs each of the
    # ~10,000 rows a second a batch writes (make bench: about 30% of PostgreSQL's time).
    from_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    to_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    # Denormalised for scoping without joins: the operators and holder tenants of both sides.
    # Denormalised copies of the two accounts' operator and holder tenant, for scoping without
    # joins. They carry no database constraint: the journal copies them from the locked
    # account rows in the same transaction, and the accounts' own keys are the integrity
    # (a foreign-key check per copy cost about a fifth of PostgreSQL's time in a batch).
    from_operator = models.ForeignKey(
        Institution, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    to_operator = models.ForeignKey(
        Institution, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    from_holder = models.ForeignKey(
        Tenant, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    to_holder = models.ForeignKey(
        Tenant, null=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    memo = models.CharField(max_length=140, blank=True)
    # Indexed only where set (the partial index below): most transfers have no hold.
    hold = models.ForeignKey(
        Hold, null=True, blank=True, on_delete=models.PROTECT, related_name="transfers", db_index=False
    )
    # The obligation's parties are copies of the two accounts' operators (no constraint, as above).
    obligor = models.ForeignKey(
        Institution, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False,
        db_constraint=False,
    )  # fmt: skip
    obligee = models.ForeignKey(
        Institution, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_index=False,
        db_constraint=False,
    )  # fmt: skip
    obligation = models.BigIntegerField(default=0)
    settlement = models.ForeignKey(
        Settlement, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    tier1_tx_id = models.CharField(max_length=64, blank=True)
    tier1_height = models.PositiveBigIntegerField(null=True, blank=True)
    # No index of its own: every list reads through a composite index led by a party (operator,
    # holder, account) or the central bank's partial one; a lone created_at index would cost
    # every payment an index entry for the Django admin's full list only.
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="dcep_transfer_positive")]
        indexes = [
            models.Index(fields=["from_operator", "created_at"]),
            models.Index(fields=["to_operator", "created_at"]),
            # Only corporate wallets have a holder tenant, and only those rows are indexed
            # (a payment between personal wallets writes two index entries less).
            models.Index(
                fields=["from_holder", "created_at"],
                condition=Q(from_holder__isnull=False),
                name="dcep_transfer_from_holder",
            ),
            models.Index(
                fields=["to_holder", "created_at"], condition=Q(to_holder__isnull=False), name="dcep_transfer_to_holder"
            ),
            models.Index(fields=["hold"], condition=Q(hold__isnull=False), name="dcep_transfer_hold"),
            models.Index(fields=["from_account", "created_at"]),
            models.Index(fields=["to_account", "created_at"]),
            models.Index(
                fields=["created_at", "id"],
                condition=Q(obligation__gt=0, settlement__isnull=True),
                name="dcep_unsettled",
            ),
            models.Index(
                fields=["settlement", "created_at", "id"],
                condition=Q(settlement__isnull=False),
                name="dcep_settlement_leaves_set",
            ),
            # The central bank's list (tier-1 transfers only: few among millions of payments).
            models.Index(
                fields=["created_at", "id"],
                condition=Q(kind__in=["issuance", "withdrawal", "reversal"]),
                name="dcep_transfer_tier1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.pk})"


class Entry(models.Model):
    """One leg of a transfer on one account; chained to the account's previous entry by hash."""

    id = models.BigAutoField(primary_key=True)
    # No foreign-key constraint (its check cost 9 µs a payment at commit): the journal writes an
    # entry only in the statement that writes its transfer, neither is ever deleted (triggers),
    # and ``dcep_audit`` checks that every entry's transfer exists.
    # Nor an index: entries are read by account (the unique (account, seq) index) and, by
    # transfer, only in dcep_audit's full scans (two index entries less a payment).
    transfer = models.ForeignKey(
        Transfer, on_delete=models.PROTECT, related_name="entries", db_constraint=False, db_index=False
    )
    # Indexed by the unique (account, seq) constraint below.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries", db_index=False)
    amount = models.BigIntegerField()  # signed: + credit, - debit
    balance_after = models.BigIntegerField()
    seq = models.BigIntegerField()  # 1, 2, … per account
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["account", "seq"], name="dcep_entry_account_seq")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.amount:+d}"


class Tier1Op(TimeStamped):
    """A tier-1 chain transaction (issue or withdraw) and what the journal did with it.

    Written before the transaction is sent, with its signed envelope and fixed nonce, so a
    retry re-sends the same transaction and the chain applies it at most once.
    """

    class Kind(models.TextChoices):
        ISSUE = "issue"
        WITHDRAW = "withdraw"

    class Status(models.TextChoices):
        PENDING = "pending"  # sent or about to be; outcome not known yet
        APPLIED = "applied"  # committed on chain and journaled
        REFUSED = "refused"  # the chain refused it for good (journal compensated)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    operator = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    envelope = models.JSONField()
    tx_id = models.CharField(max_length=64)
    # Ids of envelopes signed before the current one (re-signed when stale, same nonce): a
    # replayed nonce is resolved by looking these up on the chain.
    earlier_tx_ids = models.JSONField(default=list, blank=True)
    receipt = models.JSONField(null=True, blank=True)
    # The withdrawal's transfer (journaled first); the issuance's once the chain committed.
    transfer = models.OneToOneField(Transfer, null=True, blank=True, on_delete=models.PROTECT, related_name="tier1_op")
    # "<tenant id>:<Idempotency-Key>": a resend of the same request resumes this operation.
    request_key = models.CharField(max_length=300, unique=True)
    reversal = models.OneToOneField(Transfer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.status})"


class IdempotencyRecord(models.Model):
    """The first response to an ``Idempotency-Key`` of one tenant, replayed to every resend."""

    class Status(models.TextChoices):
        IN_FLIGHT = "in_flight"
        DONE = "done"

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the unique (tenant, key) index leads with it (one index less to write a payment).
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="dcep_idempotency_unique")]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.key} ({self.status})"
