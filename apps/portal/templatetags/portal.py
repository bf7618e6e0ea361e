"""Small filters the portal's templates share."""

from __future__ import annotations

from django import template

register = template.Library()

_GOOD = {"running", "active", "succeeded", "committed", "healthy", "paid", "delivered", "settled", "ok"}
_BAD = {"failed", "unavailable", "degraded", "error", "cancelled", "revoked", "frozen", "dead", "overdue", "suspended"}


@register.filter
def money(fen) -> str:
    """Integer fen as yuan: 123456 -> "¥1,234.56" (money is never a float here)."""
    try:
        fen = int(fen)
    except (TypeError, ValueError):
        return "—"
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


@register.filter
def tone(status) -> str:
    """The CSS class of a status badge: good, bad, or busy (anything in between)."""
    value = str(status or "").lower()
    if value in _GOOD:
        return "good"
    if value in _BAD:
        return "bad"
    return "busy"
