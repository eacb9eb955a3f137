"""Model prices of an endpoint in USD per million tokens: its overrides, else genai-prices through
``governance.pricing`` (the one place that reads the bundled price data)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pydantic

from agents.config import PriceOverride
from agents.models import ModelEndpoint, ProviderKind
from governance.pricing import UnknownModelPrice, model_rates

USD_QUANTUM = Decimal("0.00000001")
TOKENS_PER_MTOK = Decimal(1_000_000)
# Kinds whose genai-prices provider id is the kind itself when none is configured. An
# OpenAI-compatible endpoint may be a free local model: it is priced only when configured.
_PROVIDER_FOR_KIND = {ProviderKind.OPENAI: "openai", ProviderKind.ANTHROPIC: "anthropic"}


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Token prices of one model in USD per million tokens.

    ``source`` is ``"override"`` (the endpoint's ``price_overrides``) or ``"genai-prices"``.
    """

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    source: str


def endpoint_provider(endpoint: ModelEndpoint) -> str | None:
    """The genai-prices provider id of ``endpoint``: its ``genai_prices_provider``, or the
    kind for ``openai`` / ``anthropic`` endpoints; ``None`` (not priced by genai-prices)
    for other kinds without one."""
    return endpoint.genai_prices_provider or _PROVIDER_FOR_KIND.get(endpoint.kind)


def model_price(*, endpoint: ModelEndpoint, model_name: str) -> ModelPrice | None:
    """The input and output token prices of ``model_name`` called through ``endpoint``.

    ``endpoint.price_overrides[model_name]`` wins (``input_per_mtok`` and ``output_per_mtok``,
    both required, decimal strings or numbers >= 0: ``agents.config.PriceOverride``, checked
    when the endpoint is saved). Otherwise the model is looked up in
    the genai-prices data bundled with the installed package (offline; nothing is
    downloaded) under ``endpoint.genai_prices_provider``, or the kind for ``openai`` /
    ``anthropic`` endpoints, with the prices in force now. For a model priced in tiers by
    prompt size, the base tier (below the first threshold) is returned.

    Returns ``None`` when there is no override and no provider to look in, or the provider
    or model is unknown to genai-prices, or it has no per-token price. Raises
    ``ValueError`` naming the endpoint, model and problem when the stored override is
    malformed (a row written around the model's validation): never priced as 0.
    """
    override = (endpoint.price_overrides or {}).get(model_name)
    if override is not None:
        try:
            prices = PriceOverride.model_validate(override)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'override'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(
                f"Model endpoint {endpoint.name}: the price override of {model_name!r} is "
                f"invalid ({problems})."
            ) from exc
        return ModelPrice(
            input_usd_per_mtok=prices.input_per_mtok,
            output_usd_per_mtok=prices.output_per_mtok,
            source="override",
        )
    provider_id = endpoint_provider(endpoint)
    if not provider_id or not model_name:
        return None
    try:
        rates = model_rates(provider_id, model_name)
    except UnknownModelPrice:
        return None
    return ModelPrice(
        input_usd_per_mtok=rates.input_usd_per_mtok,
        output_usd_per_mtok=rates.output_usd_per_mtok,
        source="genai-prices",
    )


def call_cost_usd(*, price: ModelPrice, input_tokens: int, output_tokens: int) -> Decimal:
    """Cost in USD of one model call: ``(input_tokens * input price + output_tokens * output
    price) / 1,000,000``, computed exactly in ``Decimal`` and quantized once, to 1e-8 USD
    with ``ROUND_HALF_UP``. Raises ``ValueError`` for negative token counts."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must be >= 0")
    with localcontext() as context:
        context.prec = 60  # exact for any realistic token count and price
        total = (
            Decimal(input_tokens) * price.input_usd_per_mtok
            + Decimal(output_tokens) * price.output_usd_per_mtok
        ) / TOKENS_PER_MTOK
        return total.quantize(USD_QUANTUM, rounding=ROUND_HALF_UP)
