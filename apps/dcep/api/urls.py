"""Routes under /api/v1/dcep/ (included by bsn/urls.py)."""

from apps.common.routers import OptionalSlashRouter, optional_slash
from apps.dcep.api.ledger import ChainView, InstitutionViewSet, SettlementViewSet, SupplyView, TransferViewSet
from apps.dcep.api.money import (
    ExchangeViewSet,
    HoldViewSet,
    IssuanceViewSet,
    PaymentViewSet,
    RedemptionViewSet,
    WithdrawalViewSet,
)
from apps.dcep.api.wallets import WalletViewSet

router = OptionalSlashRouter()
router.register("institutions", InstitutionViewSet, basename="dcep-institution")
router.register("issuances", IssuanceViewSet, basename="dcep-issuance")
router.register("withdrawals", WithdrawalViewSet, basename="dcep-withdrawal")
router.register("wallets", WalletViewSet, basename="dcep-wallet")
router.register("exchanges", ExchangeViewSet, basename="dcep-exchange")
router.register("redemptions", RedemptionViewSet, basename="dcep-redemption")
router.register("payments", PaymentViewSet, basename="dcep-payment")
router.register("holds", HoldViewSet, basename="dcep-hold")
router.register("transfers", TransferViewSet, basename="dcep-transfer")
router.register("settlements", SettlementViewSet, basename="dcep-settlement")

urlpatterns = [
    optional_slash("chain", ChainView.as_view(), name="dcep-chain"),
    optional_slash("supply", SupplyView.as_view(), name="dcep-supply"),
    *router.urls,
]
