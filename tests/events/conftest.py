"""The trade-finance app with its real node and the loopback receiver, shared with tests/webhooks."""

from tests.webhooks.conftest import receiver, trade_app  # noqa: F401 - fixtures re-exported
