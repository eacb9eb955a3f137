"""USD cost of model calls from token usage: genai-prices' bundled data (offline) or an override.

Prices come from the price data shipped inside the installed ``genai-prices`` package
(``genai_prices.data``), read into our own ``DataSnapshot``: nothing is downloaded, and the
package's opt-in auto-updater (``UpdatePrices``) is never started, so a given library
version always prices a call the same way. The cost formula is genai-prices' own
(``ModelPrice.calc_price``), also for overrides, so both sources agree on what the token
counts mean:

- ``input_tokens`` counts every prompt token, cached ones included;
  ``cache_read_tokens`` and ``cache_write_tokens`` are the parts of it read from / written
  to the provider's prompt cache (priced at their own rates when the model has them,
  otherwise at the input rate);
- ``output_tokens`` counts every generated token (reasoning tokens included).

Costs are ``Decimal`` USD quantized once to 1e-8 (``ROUND_HALF_UP``); rates are USD per
million tokens. Callers fail closed: an unknown model without an override raises
``UnknownModelPrice`` and the call must not go ahead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from importlib.metadata import version as _package_version
from typing import Any

from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelPrice, TieredPrices, Usage

SOURCE_GENAI_PRICES = "genai-prices"
SOURCE_OVERRIDE = "override"
USD_QUANTUM = Decimal("0.00000001")
GENAI_PRICES_VERSION = _package_version("genai-prices")

# Override keys (as in ``ModelEndpoint.price_overrides[model]``) -> TokenRates fields.
OVERRIDE_KEYS = {
    "input_per_mtok": "input_usd_per_mtok",
    "output_per_mtok": "output_usd_per_mtok",
    "cache_read_per_mtok": "cache_read_usd_per_mtok",
    "cache_write_per_mtok": "cache_write_usd_per_mtok",
}


class UnknownModelPrice(LookupError):
    """No price is known for the model: the provider or model is not in the bundled
    genai-prices data (or has no per-token price) and no override was given."""


class PriceOverrideError(ValueError):
    """An override is malformed. ``errors`` maps each offending key (``input_per_mtok``) to
    its message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))


@dataclass(frozen=True, slots=True)
class TokenRates:
    """Token prices in USD per million tokens (``None``: the model has no such rate; cache
    tokens are then priced at the input rate)."""

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cache_read_usd_per_mtok: Decimal | None = None
    cache_write_usd_per_mtok: Decimal | None = None

    def as_model_price(self) -> ModelPrice:
        prices = {
            "input_mtok": self.input_usd_per_mtok,
            "output_mtok": self.output_usd_per_mtok,
            "cache_read_mtok": self.cache_read_usd_per_mtok,
            "cache_write_mtok": self.cache_write_usd_per_mtok,
        }
        return ModelPrice(**{key: value for key, value in prices.items() if value is not None})

    def as_data(self) -> dict[str, str | None]:
        """The rates as decimal strings (for the audit log and JSON)."""
        return {
            "input_usd_per_mtok": str(self.input_usd_per_mtok),
            "output_usd_per_mtok": str(self.output_usd_per_mtok),
            "cache_read_usd_per_mtok": _str_or_none(self.cache_read_usd_per_mtok),
            "cache_write_usd_per_mtok": _str_or_none(self.cache_write_usd_per_mtok),
        }


@dataclass(frozen=True, slots=True)
class PricedUsage:
    """The cost of one call and the price it was computed with.

    ``cost_usd``: Decimal USD (1e-8). ``source``: ``"genai-prices"`` or ``"override"``.
    ``rates``: the rates applied (for a model priced in tiers by prompt size, the tier the
    call fell into; ``None`` for a fixed price, see ``fixed_price``). ``library_version``:
    the installed genai-prices version (its bundled data is the price list; empty for a
    fixed price). ``model_id``: the genai-prices model id the reference matched (the
    reference itself for overrides).
    """

    cost_usd: Decimal
    source: str
    rates: TokenRates | None
    library_version: str
    provider_id: str
    model_ref: str
    model_id: str


def _str_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@cache
def bundled_snapshot() -> DataSnapshot:
    """The price data bundled with the installed genai-prices, as our own snapshot.

    Imported on first use (the data module takes ~0.3 s to load). Never the package's
    global snapshot, which its auto-updater may replace with downloaded data.
    """
    from genai_prices.data import providers

    return DataSnapshot(providers=providers, from_auto_update=False)


def _rate(value: Any, prompt_tokens: int) -> Decimal | None:
    """The applicable per-MTok rate: for tiered prices, the tier the prompt size reaches
    (genai-prices' rule: all tokens pay the highest tier whose start is exceeded)."""
    if value is None:
        return None
    if isinstance(value, TieredPrices):
        applicable = value.base
        for tier in sorted(value.tiers, key=lambda t: t.start):
            if prompt_tokens > tier.start:
                applicable = tier.price
        return applicable
    return Decimal(value)


def _check_at(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(tz=UTC)
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    return at


def _genai_model(provider_id: str | None, model_ref: str, at: datetime):
    """(provider, model, genai-prices ModelPrice) or ``UnknownModelPrice``."""
    if not provider_id:
        raise UnknownModelPrice(
            f"no price for model {model_ref!r}: no genai-prices provider id is configured "
            "and no price override is set"
        )
    if not model_ref:
        raise UnknownModelPrice("no price: the model name is empty")
    try:
        provider, model = bundled_snapshot().find_provider_model(model_ref, None, provider_id, None)
    except LookupError as exc:
        raise UnknownModelPrice(
            f"no price for model {model_ref!r} at provider {provider_id!r} in genai-prices "
            f"{GENAI_PRICES_VERSION} ({exc}); set a price override to use it"
        ) from exc
    prices = model.get_prices(at)
    if getattr(prices, "input_mtok", None) is None and getattr(prices, "output_mtok", None) is None:
        raise UnknownModelPrice(
            f"genai-prices {GENAI_PRICES_VERSION} has no per-token price for model "
            f"{model.id!r} at provider {provider.id!r}; set a price override to use it"
        )
    return provider, model, prices


def _decimal_rate(key: str, value: Any, errors: dict[str, str]) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        errors[key] = f"{value!r} is not a decimal number"
        return None
    try:
        # A JSON number arrives as a float: its shortest repr ("2.5") is the decimal meant.
        rate = Decimal(value) if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        errors[key] = f"{value!r} is not a decimal number"
        return None
    if not rate.is_finite() or rate < 0:
        errors[key] = "must be a finite number >= 0"
        return None
    return rate


def price_override_from_mapping(data: Mapping[str, Any]) -> TokenRates:
    """Token rates from an override mapping: ``input_per_mtok`` and ``output_per_mtok``
    (required) and optionally ``cache_read_per_mtok`` / ``cache_write_per_mtok``, each USD
    per million tokens as a decimal string or number. Raises ``PriceOverrideError`` naming
    every bad or unknown key."""
    if not isinstance(data, Mapping):
        raise PriceOverrideError({"override": "must be a mapping of rates"})
    errors: dict[str, str] = {}
    unknown = sorted(set(data) - set(OVERRIDE_KEYS))
    for key in unknown:
        errors[str(key)] = f"unknown key; use {', '.join(OVERRIDE_KEYS)}"
    values = {
        field: _decimal_rate(key, data.get(key), errors) for key, field in OVERRIDE_KEYS.items()
    }
    for key in ("input_per_mtok", "output_per_mtok"):
        if data.get(key) is None and key not in errors:
            errors[key] = "this rate is required"
    if errors:
        raise PriceOverrideError(errors)
    return TokenRates(**values)


def _override_rates(override: TokenRates | Mapping[str, Any]) -> TokenRates:
    return override if isinstance(override, TokenRates) else price_override_from_mapping(override)


def _check_tokens(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    cached = counts.get("cache_read_tokens", 0) + counts.get("cache_write_tokens", 0)
    if cached > counts["input_tokens"]:
        raise ValueError(
            "cache_read_tokens + cache_write_tokens cannot exceed input_tokens "
            "(input_tokens counts every prompt token, cached ones included)"
        )


def model_rates(
    provider_id: str | None, model_ref: str, *, prompt_tokens: int = 0, at: datetime | None = None
) -> TokenRates:
    """The genai-prices rates of ``model_ref`` at ``provider_id`` in force at ``at`` (default
    now), for a prompt of ``prompt_tokens`` (selects the tier of tiered prices; 0: base
    tier). Raises ``UnknownModelPrice``."""
    _, _, prices = _genai_model(provider_id, model_ref, _check_at(at))
    return TokenRates(
        input_usd_per_mtok=_rate(getattr(prices, "input_mtok", None), prompt_tokens) or Decimal(0),
        output_usd_per_mtok=_rate(getattr(prices, "output_mtok", None), prompt_tokens)
        or Decimal(0),
        cache_read_usd_per_mtok=_rate(getattr(prices, "cache_read_mtok", None), prompt_tokens),
        cache_write_usd_per_mtok=_rate(getattr(prices, "cache_write_mtok", None), prompt_tokens),
    )


def price_usage(
    provider_id: str | None,
    model_ref: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    override: TokenRates | Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> PricedUsage:
    """The USD cost of one model call from its real token usage.

    ``override`` (``TokenRates`` or a mapping, see ``price_override_from_mapping``) wins;
    otherwise the model is looked up under ``provider_id`` (a genai-prices provider id such
    as ``openai``) in the bundled genai-prices data with the prices in force at ``at``
    (default now; must be timezone-aware). Formula (genai-prices ``ModelPrice.calc_price``):
    ``(uncached input x input rate + cache reads x cache-read rate + cache writes x
    cache-write rate + output x output rate) / 1,000,000``, then quantized to 1e-8 USD.

    Raises ``UnknownModelPrice`` (no override and the model or its price is unknown),
    ``PriceOverrideError`` (malformed override) and ``ValueError`` (negative or inconsistent
    token counts, naive ``at``).
    """
    _check_tokens(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
    )
    at = _check_at(at)
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
    if override is not None:
        rates = _override_rates(override)
        total = rates.as_model_price().calc_price(usage)["total_price"]
        return PricedUsage(
            cost_usd=_quantize(total),
            source=SOURCE_OVERRIDE,
            rates=rates,
            library_version=GENAI_PRICES_VERSION,
            provider_id=provider_id or "",
            model_ref=model_ref,
            model_id=model_ref,
        )
    provider, model, prices = _genai_model(provider_id, model_ref, at)
    total = prices.calc_price(usage)["total_price"]
    rates = model_rates(provider.id, model_ref, prompt_tokens=input_tokens, at=at)
    return PricedUsage(
        cost_usd=_quantize(total),
        source=SOURCE_GENAI_PRICES,
        rates=rates,
        library_version=GENAI_PRICES_VERSION,
        provider_id=provider.id,
        model_ref=model_ref,
        model_id=model.id,
    )


def estimate_worst_case_usd(
    provider_id: str | None,
    model_ref: str,
    *,
    prompt_tokens: int,
    max_output_tokens: int,
    override: TokenRates | Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> PricedUsage:
    """The most a call can cost, for a budget reservation: ``prompt_tokens`` at the higher
    of the input and cache-write rates (a prompt written to the cache may cost more than a
    plain one) plus ``max_output_tokens`` at the output rate, priced like ``price_usage``
    (same sources, tiers chosen by ``prompt_tokens``). Cache reads only lower the cost, so
    they are left out.

    Raises ``UnknownModelPrice``, ``PriceOverrideError`` and ``ValueError`` like
    ``price_usage``.
    """
    _check_tokens(input_tokens=prompt_tokens, output_tokens=max_output_tokens)
    if override is not None:
        rates = _override_rates(override)
    else:
        rates = model_rates(provider_id, model_ref, prompt_tokens=prompt_tokens, at=at)
    write = rates.cache_write_usd_per_mtok
    cache_write_tokens = (
        prompt_tokens if write is not None and write > rates.input_usd_per_mtok else 0
    )
    return price_usage(
        provider_id,
        model_ref,
        input_tokens=prompt_tokens,
        output_tokens=max_output_tokens,
        cache_write_tokens=cache_write_tokens,
        override=rates if override is not None else None,
        at=at,
    )


def _quantize(value: Decimal) -> Decimal:
    return Decimal(value).quantize(USD_QUANTUM, rounding=ROUND_HALF_UP)


def fixed_price(cost_usd: Decimal, *, provider_id: str = "", model_ref: str = "") -> PricedUsage:
    """A configured fixed price (e.g. per call of a priced tool) as a ``PricedUsage`` with
    source ``"override"`` and no token rates. ``cost_usd`` must be a ``Decimal`` >= 0 (an
    ``int`` is accepted); it is quantized to 1e-8 USD. Raises ``TypeError`` for floats and
    ``ValueError`` for negative or non-finite amounts."""
    if isinstance(cost_usd, bool) or not isinstance(cost_usd, Decimal | int):
        raise TypeError(f"cost_usd must be a Decimal, got {type(cost_usd).__name__}")
    amount = Decimal(cost_usd)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"cost_usd must be a finite amount >= 0, got {cost_usd}")
    return PricedUsage(
        cost_usd=_quantize(amount),
        source=SOURCE_OVERRIDE,
        rates=None,
        library_version="",
        provider_id=provider_id,
        model_ref=model_ref,
        model_id=model_ref,
    )
