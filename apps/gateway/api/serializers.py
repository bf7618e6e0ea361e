"""App users (input/output) and the ledger's formats as documented in the OpenAPI schema.

The gateway passes signed envelopes and node answers through unchanged (re-encoding a
signed transaction could only break it), so the ledger serializers below describe the
formats of docs/ledger-protocol.md for the schema; they do not validate.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.reverse import reverse

from apps.chainapps.keys import public_key_valid
from apps.common.serializers import StrictInputSerializer
from apps.gateway.models import RESERVED_NAMES, USER_NAME_RE, AppUser
from bsn.ledger.canonical import CanonicalError, check


class AppUserSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    app = serializers.UUIDField(source="app_id", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = AppUser
        fields = [
            "id",
            "url",
            "app",
            "name",
            "public_key",
            "mode",
            "status",
            "last_error",
            "created_by",
            "created_at",
            "activated_at",
            "revoked_at",
            "exported_at",
        ]

    def get_url(self, user) -> str:
        return reverse("appuser-detail", args=[user.app_id, user.pk], request=self.context.get("request"))


class AppUserCreateInputSerializer(StrictInputSerializer):
    name = serializers.RegexField(
        USER_NAME_RE.pattern,
        max_length=64,
        error_messages={"invalid": "1–64 letters, digits, '.', '_' or '-'"},
    )
    mode = serializers.ChoiceField(
        choices=AppUser.Mode.choices,
        default=AppUser.Mode.UPLOAD,
        help_text="`upload`: you keep the private key and send `public_key`; `custody`: the platform generates "
        "the key, keeps it encrypted and signs for the user (docs/custody.md)",
    )
    public_key = serializers.CharField(
        max_length=64,
        required=False,
        help_text="upload mode only (required there): base64 (standard alphabet, padded) of the 32 raw bytes of "
        "an Ed25519 public key",
    )

    def validate_name(self, value: str) -> str:
        if value in RESERVED_NAMES:
            raise serializers.ValidationError(f"'{value}' is reserved for the platform")
        return value

    def validate_public_key(self, value: str) -> str:
        if not public_key_valid(value):
            raise serializers.ValidationError(
                "not an Ed25519 public key: expected base64 (standard alphabet, with padding) of 32 raw bytes "
                "encoding a valid curve point"
            )
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs["mode"] == AppUser.Mode.CUSTODY and "public_key" in attrs:
            raise serializers.ValidationError(
                {"public_key": "not accepted in custody mode: the platform generates the key pair"}
            )
        if attrs["mode"] == AppUser.Mode.UPLOAD and "public_key" not in attrs:
            raise serializers.ValidationError({"public_key": "required in upload mode (the default)"})
        return attrs


class CustodySignInputSerializer(StrictInputSerializer):
    """One contract call the platform signs as a custody user (the client's ``sign`` arguments)."""

    contract = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9_]{0,63}$",
        error_messages={"invalid": "a contract name (1-64 letters, digits or '_'; '_…' names are the platform's)"},
    )
    function = serializers.RegexField(
        r"^[A-Za-z0-9_.-]{1,64}$", error_messages={"invalid": "a function name (1-64 letters, digits, '.', '_', '-')"}
    )
    args = serializers.DictField(required=False, default=dict, help_text="the function's arguments (JSON object)")
    nonce = serializers.RegexField(
        r"^[A-Za-z0-9_.:-]{1,64}$",
        required=False,
        help_text="optional; yours to choose so that a retry after a 504 can never apply twice (a used nonce is "
        "refused with `replayed_nonce`). Default: a fresh random one.",
        error_messages={"invalid": "1-64 letters, digits, '.', '_', ':' or '-'"},
    )

    def validate_args(self, value: dict) -> dict:
        try:
            check(value)  # what the signature covers must be canonical JSON (docs/ledger-protocol.md)
        except CanonicalError as exc:
            raise serializers.ValidationError(f"not canonical JSON: {exc}") from None
        return value


class CustodyExportSerializer(serializers.Serializer):
    """The one answer that ever holds a custodied private key."""

    id = serializers.UUIDField(source="user.pk")
    name = serializers.CharField(source="user.name")
    public_key = serializers.CharField(source="user.public_key")
    private_key = serializers.CharField(help_text="base64 of the 32-byte Ed25519 seed (what bsn.client.Client takes)")
    private_key_pem = serializers.CharField(help_text="the same key as unencrypted PKCS#8 PEM")
    exported_at = serializers.DateTimeField()


# --------------------------------------------------------------------------- ledger formats (schema only)


class TxBodySerializer(serializers.Serializer):
    app = serializers.UUIDField(help_text="must be this app's id")
    contract = serializers.CharField()
    function = serializers.CharField()
    args = serializers.DictField()
    signer = serializers.CharField(help_text="the app user's name")
    nonce = serializers.CharField(max_length=64, help_text="1–64 characters, used once per signer")
    timestamp = serializers.IntegerField(help_text="milliseconds since the Unix epoch")


class EnvelopeSerializer(serializers.Serializer):
    tx = TxBodySerializer()
    sig = serializers.CharField(help_text="base64 Ed25519 signature of canonical(tx)")


class BatchSerializer(serializers.Serializer):
    txs = EnvelopeSerializer(many=True)


class SubmitSerializer(serializers.Serializer):
    """One signed envelope, or ``{"txs": [envelopes]}``."""

    tx = TxBodySerializer(required=False)
    sig = serializers.CharField(required=False)
    txs = EnvelopeSerializer(many=True, required=False, help_text="a batch (instead of tx + sig)")


class EventSerializer(serializers.Serializer):
    name = serializers.CharField()
    payload = serializers.JSONField()


class ReceiptSerializer(serializers.Serializer):
    tx_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["committed", "failed", "rejected"])
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    index = serializers.IntegerField(allow_null=True)
    events = EventSerializer(many=True)


class SubmitResultSerializer(serializers.Serializer):
    """A receipt (single envelope) or ``{"receipts": [...]}`` (batch)."""

    tx_id = serializers.CharField(required=False)
    status = serializers.CharField(required=False)
    result = serializers.JSONField(required=False, allow_null=True)
    error = serializers.CharField(required=False, allow_null=True)
    height = serializers.IntegerField(required=False, allow_null=True)
    index = serializers.IntegerField(required=False, allow_null=True)
    events = EventSerializer(many=True, required=False)
    receipts = ReceiptSerializer(many=True, required=False)


class TxLookupSerializer(serializers.Serializer):
    receipt = ReceiptSerializer()
    tx = EnvelopeSerializer()


class BlockHeaderSerializer(serializers.Serializer):
    app = serializers.UUIDField()
    height = serializers.IntegerField()
    prev_hash = serializers.CharField()
    merkle_root = serializers.CharField()
    timestamp = serializers.IntegerField()
    proposer = serializers.CharField(help_text="node id")
    tx_count = serializers.IntegerField()


class BlockSerializer(serializers.Serializer):
    header = BlockHeaderSerializer()
    hash = serializers.CharField(help_text="hex SHA-256 of canonical(header)")
    signature = serializers.CharField(help_text="proposer's Ed25519 signature of the 32 raw hash bytes (base64)")
    txs = EnvelopeSerializer(many=True)


class StateSerializer(serializers.Serializer):
    contract = serializers.CharField()
    key = serializers.CharField()
    value = serializers.JSONField()


class ChainNodeSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    public_key = serializers.CharField()


class ChainSerializer(serializers.Serializer):
    app_id = serializers.UUIDField()
    node_id = serializers.CharField()
    public_key = serializers.CharField()
    height = serializers.IntegerField()
    head_hash = serializers.CharField()
    state_root = serializers.CharField()
    ordering = serializers.ChoiceField(choices=["solo", "etcd"])
    proposer = serializers.CharField(allow_null=True)
    is_proposer = serializers.BooleanField()
    nodes = ChainNodeSerializer(many=True)
    users = serializers.ListField(child=serializers.CharField())
