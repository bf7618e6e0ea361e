"""DCEP input and output shapes. Amounts are integers of fen: floats and strings are refused."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.serializers import StrictInputSerializer
from apps.dcep.errors import Invalid
from apps.dcep.models import Account, Hold, Institution, Settlement, Transfer
from apps.dcep.programmable import MAX_NAME, check_rule, rule_of
from apps.dcep.tiers import TIERS, caps, luhn_valid
from bsn.ledger.contracts.base import USER_RE

MAX_FEN = 2**63 - 1


class FenField(serializers.IntegerField):
    """A positive integer number of fen; ``100.0``, ``"100"`` and ``true`` are refused."""

    default_error_messages = {"fen": "an integer number of fen (not a float, string or boolean)"}

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_FEN)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("fen")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON ``true`` or ``false`` only: DRF's BooleanField also takes "yes", "on", 1 and "0"."""

    default_error_messages = {"invalid": "true or false (a JSON boolean)"}

    def to_internal_value(self, data):
        if type(data) is not bool:
            self.fail("invalid")
        return data


@extend_schema_field(
    {"type": "string", "pattern": "^[0-9]{16}$", "description": "16 digits, the last a Luhn check digit"}
)
class WalletNumberField(serializers.CharField):
    default_error_messages = {"wallet": "a 16-digit wallet number with a valid check digit"}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 16)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not luhn_valid(value):
            self.fail("wallet")
        return value


class OperatorAmountInput(StrictInputSerializer):
    operator = serializers.SlugField(max_length=63)
    amount = FenField()


class WalletOpenInput(StrictInputSerializer):
    holder_name = serializers.CharField(max_length=200)
    tier = serializers.ChoiceField(choices=TIERS)
    kind = serializers.ChoiceField(choices=Account.WalletKind.choices)
    holder_tenant = serializers.SlugField(max_length=63, required=False, allow_null=True)


class WalletUpdateInput(StrictInputSerializer):
    tier = serializers.ChoiceField(choices=TIERS, required=False)
    status = serializers.ChoiceField(choices=Account.Status.choices, required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("give tier and/or status")
        return attrs


class WalletAmountInput(StrictInputSerializer):
    wallet = WalletNumberField()
    amount = FenField()


class PaymentInput(StrictInputSerializer):
    from_wallet = WalletNumberField()
    to_wallet = WalletNumberField()
    amount = FenField()
    memo = serializers.CharField(max_length=140, required=False, allow_blank=True, default="")


class _UncheckedItemsListField(serializers.ListField):
    """A list whose items the serializer checks itself (``validate_payments``): DRF's ListField
    runs a child field per item, 10 µs each, more than a payment's whole check."""

    def to_internal_value(self, data):
        if isinstance(data, str | dict) or not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        if not self.allow_empty and not data:
            self.fail("empty")
        return data


class PaymentBatchInput(StrictInputSerializer):
    # Items checked in validate_payments; the child is what the schema shows for each item.
    payments = _UncheckedItemsListField(child=PaymentInput(), min_length=1)
    linked = StrictBooleanField(required=False, default=False)

    def validate_payments(self, payments):
        from django.conf import settings

        if len(payments) > settings.BSN_DCEP_MAX_BATCH:
            raise serializers.ValidationError(f"at most {settings.BSN_DCEP_MAX_BATCH} payments in one batch")
        # Checked by hand, not with PaymentInput per item: a serializer per item costs about
        # 60 µs, most of the time of an 8,190-payment batch. Same rules as PaymentInput.
        errors = {}
        cleaned = []
        checked: set[str] = set()  # wallet numbers whose check digit is good (a batch repeats them)
        for index, item in enumerate(payments):
            problem = _payment_problem(item, checked)
            if problem:
                errors[str(index)] = problem
                continue
            cleaned.append(
                {
                    "from_wallet": item["from_wallet"],
                    "to_wallet": item["to_wallet"],
                    "amount": item["amount"],
                    "memo": item.get("memo") or "",
                }
            )
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned


_PAYMENT_FIELDS = frozenset(("from_wallet", "to_wallet", "amount", "memo"))


def _payment_problem(item, checked: set[str] | None = None) -> dict | None:
    """What is wrong with one payment of a batch; ``checked`` remembers the good wallet numbers."""
    checked = set() if checked is None else checked
    if not isinstance(item, dict):
        return {"non_field_errors": ["a payment is an object"]}
    if not item.keys() <= _PAYMENT_FIELDS:
        return {name: ["unknown field"] for name in sorted(set(item) - _PAYMENT_FIELDS)}
    problems = {}
    for name in ("from_wallet", "to_wallet"):
        value = item.get(name)
        if not isinstance(value, str) or (value not in checked and not luhn_valid(value)):
            problems[name] = ["a 16-digit wallet number with a valid check digit"]
        else:
            checked.add(value)
    amount = item.get("amount")
    if type(amount) is not int or not 0 < amount <= MAX_FEN:
        problems["amount"] = ["a positive integer number of fen (not a float, string or boolean)"]
    memo = item.get("memo", "")
    if memo is not None and (not isinstance(memo, str) or len(memo) > 140):
        problems["memo"] = ["a string of at most 140 characters"]
    return problems or None


def _plain_text(value: str) -> bool:
    """What a DRF CharField keeps unchanged: no surrounding blanks, no NUL, no lone surrogate."""
    if value != value.strip() or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def payment_input(data) -> dict:
    """``PaymentInput``'s validated data; the common case without building the serializer.

    A DRF serializer costs about 0.4 ms a request to build (it deep-copies its fields), a
    tenth of a payment. A body whose every field is already in its final form (no unknown
    or missing field, a good wallet number, an integer amount, a memo a CharField would not
    change) is taken as it is; anything else goes through ``PaymentInput``, which accepts or
    refuses it with its own messages. So both ways accept exactly the same bodies.
    """
    if type(data) is dict and data.keys() <= _PAYMENT_FIELDS and _payment_problem(data) is None:
        memo = data.get("memo", "")
        if isinstance(memo, str) and _plain_text(memo):
            return {
                "from_wallet": data["from_wallet"],
                "to_wallet": data["to_wallet"],
                "amount": data["amount"],
                "memo": memo,
            }
    serializer = PaymentInput(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class MatchField(serializers.DictField):
    """A flat, non-empty object of scalars: the payload fields an event must carry, compared for equality."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            check_rule("rule", "event", value)
        except Invalid as exc:
            raise serializers.ValidationError(exc.detail.split(": ", 1)[1]) from None
        return value


class EventRuleInput(StrictInputSerializer):
    event = serializers.CharField(max_length=MAX_NAME)
    match = MatchField()
    # The app user who must have signed the event's transaction (e.g. the issuing bank).
    signer = serializers.RegexField(USER_RE, max_length=MAX_NAME, required=False)


class ReleaseOnInput(StrictInputSerializer):
    """``release_on``: the chain app (one your tenant can read), optionally its contract, and the rules."""

    app = serializers.UUIDField()
    contract = serializers.CharField(max_length=32, required=False)  # checked against the app by the service
    capture = EventRuleInput(required=False)
    void = EventRuleInput(required=False)

    def validate(self, attrs):
        if "capture" not in attrs and "void" not in attrs:
            raise serializers.ValidationError("a capture rule, a void rule or both")
        return attrs


class HoldInput(StrictInputSerializer):
    from_wallet = WalletNumberField()
    to_wallet = WalletNumberField()
    amount = FenField()
    expires_in_s = serializers.IntegerField(min_value=1, max_value=30 * 24 * 3600)
    release_on = ReleaseOnInput(required=False)


class CaptureInput(StrictInputSerializer):
    amount = FenField(required=False)


# --------------------------------------------------------------------------- output


class InstitutionSerializer(serializers.ModelSerializer):
    slug = serializers.CharField(source="tenant.slug")
    name = serializers.CharField(source="tenant.name")
    home_region = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Institution
        fields = ["slug", "name", "kind", "home_region"]


class CapsSerializer(serializers.Serializer):
    balance = serializers.IntegerField(allow_null=True)
    single = serializers.IntegerField(allow_null=True)
    daily = serializers.IntegerField(allow_null=True)


class WalletSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="number")
    operator = serializers.CharField(source="operator.tenant.slug")
    holder_tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    kind = serializers.CharField(source="wallet_kind")
    balance = serializers.SerializerMethodField()
    available = serializers.IntegerField(source="balance")
    caps = serializers.SerializerMethodField()

    class Meta:
        model = Account
        fields = [
            "id",
            "operator",
            "holder_name",
            "holder_tenant",
            "kind",
            "tier",
            "status",
            "balance",
            "available",
            "held",
            "caps",
            "created_at",
            "updated_at",
        ]

    def get_balance(self, wallet) -> int:
        return wallet.balance + wallet.held

    def get_caps(self, wallet) -> CapsSerializer:
        limits = caps(wallet.tier)
        return {"balance": limits.balance, "single": limits.single, "daily": limits.daily}


class Tier1Serializer(serializers.Serializer):
    tx_id = serializers.CharField()
    height = serializers.IntegerField(allow_null=True)


class TransferSerializer(serializers.Serializer):
    """A transfer, from a row or from the journal's dict (same shape either way)."""

    id = serializers.CharField()
    kind = serializers.ChoiceField(choices=Transfer.Kind.choices)
    amount = serializers.IntegerField()
    from_wallet = serializers.CharField(allow_null=True)
    to_wallet = serializers.CharField(allow_null=True)
    from_operator = serializers.CharField(allow_null=True)
    to_operator = serializers.CharField(allow_null=True)
    memo = serializers.CharField()
    hold = serializers.CharField(allow_null=True)
    settlement = serializers.CharField(allow_null=True)
    tier1 = Tier1Serializer(allow_null=True)
    created_at = serializers.DateTimeField()


def _wallet_number(account) -> str | None:
    return account.number if account.kind == Account.Kind.WALLET else None


def transfer_from_row(t: Transfer) -> dict:
    tier1 = None
    if t.kind in (Transfer.Kind.ISSUANCE, Transfer.Kind.WITHDRAWAL):
        op = getattr(t, "tier1_op", None)
        height = t.tier1_height
        tx_id = t.tier1_tx_id
        if op is not None:
            tx_id = op.tx_id
            height = (op.receipt or {}).get("height", height)
        tier1 = {"tx_id": tx_id, "height": height}
    return {
        "id": str(t.pk),
        "kind": t.kind,
        "amount": t.amount,
        "from_wallet": _wallet_number(t.from_account),
        "to_wallet": _wallet_number(t.to_account),
        "from_operator": t.from_operator.tenant.slug if t.from_operator_id else None,
        "to_operator": t.to_operator.tenant.slug if t.to_operator_id else None,
        "memo": t.memo,
        "hold": str(t.hold_id) if t.hold_id else None,
        "settlement": str(t.settlement_id) if t.settlement_id else None,
        "tier1": tier1,
        "created_at": t.created_at,
    }


def transfer_from_journal(d: dict, slugs: dict[int, str], created_at=None) -> dict:
    """``created_at``: the time already as JSON text (a batch's transfers share one, encoded once)."""
    src, dst = d["from"], d["to"]
    tier1 = {"tx_id": d["tier1_tx_id"], "height": d["tier1_height"]} if d["tier1_tx_id"] else None
    return {
        "id": d["id"],
        "kind": d["kind"],
        "amount": d["amount"],
        "from_wallet": _wallet_number(src),
        "to_wallet": _wallet_number(dst),
        "from_operator": slugs.get(src.operator_id),
        "to_operator": slugs.get(dst.operator_id),
        "memo": d["memo"],
        "hold": d["hold"],
        "settlement": None,
        "tier1": tier1,
        "created_at": created_at or d["created_at"],
    }


class EventRuleSerializer(serializers.Serializer):
    event = serializers.CharField()
    match = serializers.DictField()
    signer = serializers.CharField(allow_null=True)


class ReleaseOnSerializer(serializers.Serializer):
    app = serializers.UUIDField()
    contract = serializers.CharField(allow_null=True)
    capture = EventRuleSerializer(allow_null=True)
    void = EventRuleSerializer(allow_null=True)


class ReleasedBySerializer(serializers.Serializer):
    key = serializers.CharField(help_text="the event's key: <app>:<height>:<tx index>:<event index>")
    app = serializers.UUIDField()
    name = serializers.CharField()
    tx_id = serializers.CharField()
    height = serializers.IntegerField()


class HoldSerializer(serializers.ModelSerializer):
    from_wallet = serializers.CharField(source="from_account.number")
    to_wallet = serializers.CharField(source="to_account.number")
    release_on = serializers.SerializerMethodField()
    released_by = ReleasedBySerializer(allow_null=True, read_only=True)

    @extend_schema_field(ReleaseOnSerializer(allow_null=True))
    def get_release_on(self, hold: Hold) -> dict | None:
        return rule_of(hold)

    class Meta:
        model = Hold
        fields = [
            "id",
            "from_wallet",
            "to_wallet",
            "amount",
            "captured",
            "status",
            "expires_at",
            "created_at",
            "resolved_at",
            "release_on",
            "released_by",
        ]


class SettlementSerializer(serializers.ModelSerializer):
    anchor = serializers.SerializerMethodField()

    class Meta:
        model = Settlement
        fields = [
            "id",
            "status",
            "positions",
            "transfer_count",
            "merkle_root",
            "anchor",
            "attempts",
            "last_error",
            "log",
            "created_at",
            "anchored_at",
        ]

    def get_anchor(self, s) -> dict | None:
        if s.status != Settlement.Status.ANCHORED:
            return None
        block_hash = (s.anchor_block or {}).get("hash") if isinstance(s.anchor_block, dict) else None
        return {"tx_id": s.anchor_tx_id, "height": s.anchor_height, "block_hash": block_hash}


class Tier1ResultSerializer(serializers.Serializer):
    operator = serializers.CharField()
    amount = serializers.IntegerField()
    transfer = TransferSerializer()
    receipt = Tier1Serializer()


class BatchItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.IntegerField()
    transfer = TransferSerializer(required=False)
    code = serializers.CharField(required=False)
    detail = serializers.CharField(required=False)


class BatchResultSerializer(serializers.Serializer):
    applied = serializers.BooleanField()
    linked = serializers.BooleanField()
    count = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    results = BatchItemSerializer(many=True)


class ProofSerializer(serializers.Serializer):
    leaf = serializers.CharField()
    leaf_index = serializers.IntegerField()
    tree_size = serializers.IntegerField()
    audit_path = serializers.ListField(child=serializers.CharField())
    merkle_root = serializers.CharField()
    settlement = serializers.CharField()
    anchor = serializers.DictField()


class Tier1ChainSerializer(serializers.Serializer):
    """GET chain. Not ``ChainSerializer``: the schema component ``Chain`` is the gateway's (an app's chain)."""

    app = serializers.CharField()
    status = serializers.CharField()
    height = serializers.IntegerField(allow_null=True)
    head_hash = serializers.CharField(allow_null=True)
    signer = serializers.CharField()
    signer_public_key = serializers.CharField()
    node_keys = serializers.DictField(child=serializers.CharField())


class SupplySerializer(serializers.Serializer):
    issued = serializers.IntegerField()
    withdrawn = serializers.IntegerField()
    in_circulation = serializers.IntegerField()
    journal = serializers.DictField()
    operators = serializers.DictField()
    checks = serializers.ListField(child=serializers.DictField())
    ok = serializers.BooleanField()
