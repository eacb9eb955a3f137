"""Template filters for money: ``{{ amount|usd }}`` -> ``1.25`` (2 to 8 decimal places)."""

from __future__ import annotations

from decimal import Decimal

from django import template

from governance.budgets import format_usd

register = template.Library()


@register.filter
def usd(value) -> str:
    """A Decimal USD amount for people (``format_usd``); empty for None."""
    if value is None or value == "":
        return ""
    return format_usd(Decimal(value))


@register.filter
def bar_percent(value) -> str:
    """A percentage clamped to 0-100 with a dot decimal, for a CSS width."""
    number = max(0.0, min(100.0, float(value or 0)))
    return f"{number:.2f}"
