"""The cost ledger and pricing: genai-prices' bundled data (offline), overrides, unknown models,
worst-case estimates, one ledger entry per call id."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connections

from agents.services import agent_create, model_endpoint_create, tool_create
from controlplane.services import project_create
from governance import pricing
from governance.models import AuditEvent, CostEntry
from governance.pricing import (
    GENAI_PRICES_VERSION,
    PriceOverrideError,
    TokenRates,
    UnknownModelPrice,
    estimate_worst_case_usd,
    fixed_price,
    model_rates,
    price_usage,
)
from governance.selectors import cost_breakdown, cost_entries_for_project, cost_totals
from governance.services import cost_record
from tests.factories import UserFactory

D = Decimal
MTOK = D(1_000_000)


def genai_rates(provider: str, model: str):
    """The per-MTok prices of the model straight from the genai-prices data bundled with the
    installed package (the same source the code reads, looked up independently)."""
    from genai_prices.data import providers

    found = next(p for p in providers if p.id == provider)
    info = next(m for m in found.models if m.is_match(model))
    return info.get_prices(datetime.now(tz=UTC))


# --- pricing ----------------------------------------------------------------------------------


class TestGenaiPrices:
    def test_gpt_4o_costs_its_published_per_million_rates(self):
        published = genai_rates("openai", "gpt-4o")
        # The rates the bundled data publishes for gpt-4o (openai.com/api/pricing):
        assert (published.input_mtok, published.output_mtok) == (D("2.5"), D("10"))
        priced = price_usage("openai", "gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000)
        assert priced.cost_usd == D("12.50")
        priced = price_usage("openai", "gpt-4o", input_tokens=1234, output_tokens=567)
        expected = (1234 * published.input_mtok + 567 * published.output_mtok) / MTOK
        assert priced.cost_usd == expected.quantize(D("0.00000001"))
        assert priced.cost_usd == D("0.008755")
        assert priced.source == "genai-prices"
        assert priced.rates.input_usd_per_mtok == D("2.5")
        assert priced.rates.output_usd_per_mtok == D("10")
        assert priced.library_version == GENAI_PRICES_VERSION
        assert (priced.provider_id, priced.model_id) == ("openai", "gpt-4o")

    def test_cache_reads_are_part_of_the_input_and_priced_at_their_rate(self):
        published = genai_rates("openai", "gpt-4o")
        priced = price_usage(
            "openai", "gpt-4o", input_tokens=1000, output_tokens=0, cache_read_tokens=400
        )
        expected = (600 * published.input_mtok + 400 * published.cache_read_mtok) / MTOK
        assert priced.cost_usd == expected
        assert priced.rates.cache_read_usd_per_mtok == published.cache_read_mtok

    def test_tiered_prices_use_the_tier_of_the_prompt_size(self):
        published = genai_rates("anthropic", "claude-sonnet-4-5").input_mtok
        tier = published.tiers[0]
        small = price_usage("anthropic", "claude-sonnet-4-5", input_tokens=1000, output_tokens=0)
        large = price_usage(
            "anthropic", "claude-sonnet-4-5", input_tokens=tier.start + 1, output_tokens=0
        )
        assert small.rates.input_usd_per_mtok == published.base
        assert large.rates.input_usd_per_mtok == tier.price
        assert large.cost_usd == ((tier.start + 1) * tier.price / MTOK).quantize(D("1e-8"))

    def test_the_package_auto_updater_is_never_used(self):
        snapshot = pricing.bundled_snapshot()
        assert snapshot.from_auto_update is False
        from genai_prices import data_snapshot

        assert data_snapshot._custom_snapshot is None

    def test_an_unknown_model_or_provider_is_a_clear_error(self):
        with pytest.raises(UnknownModelPrice, match="'gpt-unknown-9' at provider 'openai'"):
            price_usage("openai", "gpt-unknown-9", input_tokens=1, output_tokens=1)
        with pytest.raises(UnknownModelPrice, match="no-such-provider"):
            price_usage("no-such-provider", "gpt-4o", input_tokens=1, output_tokens=1)
        with pytest.raises(UnknownModelPrice, match="no genai-prices provider"):
            price_usage(None, "local-llama", input_tokens=1, output_tokens=1)
        with pytest.raises(UnknownModelPrice):
            estimate_worst_case_usd("openai", "gpt-unknown-9", prompt_tokens=1, max_output_tokens=1)

    @pytest.mark.parametrize(
        "tokens",
        [
            {"input_tokens": -1, "output_tokens": 0},
            {"input_tokens": 1.5, "output_tokens": 0},
            {"input_tokens": 10, "output_tokens": 0, "cache_read_tokens": 11},
        ],
    )
    def test_bad_token_counts_are_refused(self, tokens):
        with pytest.raises(ValueError):
            price_usage("openai", "gpt-4o", **tokens)

    def test_a_naive_time_is_refused(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            price_usage(
                "openai", "gpt-4o", input_tokens=1, output_tokens=1, at=datetime(2026, 1, 1)
            )


class TestOverrides:
    def test_an_override_wins_over_genai_prices(self):
        override = {"input_per_mtok": "1.10", "output_per_mtok": "4.40"}
        priced = price_usage(
            "openai", "gpt-4o", input_tokens=2000, output_tokens=1000, override=override
        )
        assert priced.source == "override"
        assert priced.cost_usd == D("0.0066")  # (2000 x 1.10 + 1000 x 4.40) / 1e6
        assert priced.rates == TokenRates(D("1.10"), D("4.40"))

    def test_an_override_prices_a_model_genai_prices_does_not_know(self):
        priced = price_usage(
            None,
            "local-llama",
            input_tokens=1000,
            output_tokens=0,
            cache_read_tokens=500,
            override={"input_per_mtok": 2, "output_per_mtok": 0, "cache_read_per_mtok": "0.5"},
        )
        assert priced.cost_usd == D("0.00125")  # 500 x 2 + 500 x 0.5, per MTok

    def test_a_malformed_override_names_every_bad_key(self):
        with pytest.raises(PriceOverrideError) as error:
            price_usage(
                "openai",
                "gpt-4o",
                input_tokens=1,
                output_tokens=1,
                override={"input_per_mtok": "-1", "outptu_per_mtok": "2"},
            )
        assert set(error.value.errors) == {"input_per_mtok", "outptu_per_mtok", "output_per_mtok"}

    def test_a_fixed_price_for_a_tool_call(self):
        priced = fixed_price(D("0.002"))
        assert (priced.cost_usd, priced.source, priced.rates) == (D("0.002"), "override", None)
        with pytest.raises(TypeError):
            fixed_price(0.002)
        with pytest.raises(ValueError):
            fixed_price(D("-1"))


class TestWorstCase:
    def test_prompt_at_the_input_rate_and_max_output_at_the_output_rate(self):
        worst = estimate_worst_case_usd(
            "openai", "gpt-4o", prompt_tokens=10_000, max_output_tokens=2_000
        )
        assert worst.cost_usd == (10_000 * D("2.5") + 2_000 * D("10")) / MTOK

    def test_a_cache_write_rate_above_the_input_rate_is_the_worst_case(self):
        rates = model_rates("anthropic", "claude-sonnet-4-5")
        assert rates.cache_write_usd_per_mtok > rates.input_usd_per_mtok
        worst = estimate_worst_case_usd(
            "anthropic", "claude-sonnet-4-5", prompt_tokens=1000, max_output_tokens=1000
        )
        expected = (1000 * rates.cache_write_usd_per_mtok + 1000 * rates.output_usd_per_mtok) / MTOK
        assert worst.cost_usd == expected
        real = price_usage(
            "anthropic",
            "claude-sonnet-4-5",
            input_tokens=1000,
            output_tokens=1000,
            cache_write_tokens=1000,
        )
        assert real.cost_usd <= worst.cost_usd

    def test_with_an_override(self):
        worst = estimate_worst_case_usd(
            None,
            "local",
            prompt_tokens=100,
            max_output_tokens=100,
            override={"input_per_mtok": "1", "output_per_mtok": "3"},
        )
        assert worst.cost_usd == D("0.0004")


# --- the ledger -------------------------------------------------------------------------------


@pytest.fixture
def registry(project):
    endpoint = model_endpoint_create(project=project, name="scripted", kind="scripted")
    agent = agent_create(
        project=project,
        slug="triage",
        config={"model_endpoint": endpoint.name, "model_name": "scripted-1", "instructions": "x"},
    )
    tool = tool_create(
        project=project,
        name="lookup",
        kind="builtin",
        builtin_name="echo",
        input_schema={"type": "object"},
    )
    return agent, tool


@pytest.mark.django_db
class TestCostRecord:
    def test_a_model_call_is_recorded_with_the_price_used(self, project, admin_user, registry):
        agent, _ = registry
        priced = price_usage("openai", "gpt-4o", input_tokens=1000, output_tokens=100)
        entry = cost_record(
            call_id="run-1:step-1:0",
            kind="model",
            project=project,
            priced=priced,
            input_tokens=1000,
            output_tokens=100,
            user=admin_user,
            agent=agent,
            agent_version=agent.active_version,
            run_id="run-1",
            step_id="step-1",
        )
        entry.refresh_from_db()
        assert entry.cost_usd == D("0.0035")
        assert (entry.provider, entry.model, entry.price_source) == (
            "openai",
            "gpt-4o",
            "genai-prices",
        )
        assert (entry.input_usd_per_mtok, entry.output_usd_per_mtok) == (D("2.5"), D("10"))
        assert entry.price_library_version == GENAI_PRICES_VERSION
        assert (entry.agent, entry.agent_version, entry.user) == (
            agent,
            agent.active_version,
            admin_user,
        )
        event = AuditEvent.objects.get(action="cost.recorded")
        assert event.data["cost_usd"] == "0.00350000" and event.data["call_id"] == "run-1:step-1:0"
        # The token counts are kept (a key naming "token" would have been masked).
        assert event.data["usage"] == {
            "input": 1000,
            "output": 100,
            "cache_read": 0,
            "cache_write": 0,
        }

    def test_a_duplicate_call_id_is_not_charged_twice(self, project):
        first = cost_record(
            call_id="c1", kind="model", project=project, priced=fixed_price(D("0.10"))
        )
        second = cost_record(
            call_id="c1", kind="model", project=project, priced=fixed_price(D("0.90"))
        )
        assert second.pk == first.pk and second.cost_usd == D("0.10")
        assert CostEntry.objects.count() == 1
        assert cost_totals(cost_entries_for_project(project)).cost_usd == D("0.10")
        assert AuditEvent.objects.filter(action="cost.recorded").count() == 1

    def test_a_priced_tool_call(self, project, registry):
        _, tool = registry
        entry = cost_record(
            call_id="t1", kind="tool", project=project, priced=fixed_price(D("0.002")), tool=tool
        )
        assert (entry.kind, entry.tool, entry.price_source) == ("tool", tool, "override")
        assert entry.input_usd_per_mtok is None

    def test_objects_of_another_project_are_refused(self, project):
        other = project_create(slug="globex", name="Globex", creator=UserFactory())
        foreign = tool_create(
            project=other,
            name="x",
            kind="builtin",
            builtin_name="echo",
            input_schema={"type": "object"},
        )
        with pytest.raises(ValueError, match="another project"):
            cost_record(
                call_id="c1", kind="tool", project=project, priced=fixed_price(D(1)), tool=foreign
            )
        with pytest.raises(ValueError, match="kind"):
            cost_record(call_id="c1", kind="lunch", project=project, priced=fixed_price(D(1)))
        with pytest.raises(ValueError, match="input_tokens"):
            cost_record(
                call_id="c1",
                kind="model",
                project=project,
                priced=fixed_price(D(1)),
                input_tokens=-5,
            )
        assert not CostEntry.objects.exists()

    def test_the_ledger_outlives_a_deleted_user(self, project):
        user = UserFactory(username="leaver")
        cost_record(
            call_id="c1", kind="model", project=project, priced=fixed_price(D(1)), user=user
        )
        user.delete()
        assert CostEntry.objects.get().user is None

    def test_totals_and_breakdowns(self, project, admin_user, registry):
        agent, _ = registry
        now = datetime(2026, 5, 1, 10, tzinfo=UTC)
        rows = [
            ("a", "gpt-4o", "0.30", agent, now),
            ("b", "gpt-4o", "0.20", None, now),
            ("c", "claude", "1.00", agent, now + timedelta(days=1)),
        ]
        for call_id, model, cost, by, at in rows:
            cost_record(
                call_id=call_id,
                kind="model",
                project=project,
                priced=fixed_price(D(cost), provider_id="p", model_ref=model),
                agent=by,
                input_tokens=10,
                output_tokens=1,
                occurred_at=at,
            )
        entries = cost_entries_for_project(project)
        totals = cost_totals(entries)
        assert (totals.cost_usd, totals.entries, totals.input_tokens, totals.output_tokens) == (
            D("1.50"),
            3,
            30,
            3,
        )
        by_model = cost_breakdown(entries, by="model")
        assert [(r["key"], r["cost_usd"], r["entries"]) for r in by_model] == [
            ("claude", D("1.00"), 1),
            ("gpt-4o", D("0.50"), 2),
        ]
        by_agent = {r["key"]: r["cost_usd"] for r in cost_breakdown(entries, by="agent")}
        assert by_agent == {"triage": D("1.30"), None: D("0.20")}
        by_day = {str(r["key"]): r["cost_usd"] for r in cost_breakdown(entries, by="day")}
        assert by_day == {"2026-05-01": D("0.50"), "2026-05-02": D("1.00")}
        with pytest.raises(ValueError):
            cost_breakdown(entries, by="weather")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_records_of_one_call_write_one_entry(project):
    errors: list[BaseException] = []
    ids: list[int] = []
    barrier = threading.Barrier(20)

    def record() -> None:
        try:
            barrier.wait()
            entry = cost_record(
                call_id="retried", kind="model", project=project, priced=fixed_price(D("0.5"))
            )
            ids.append(entry.pk)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=record) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(set(ids)) == 1 and len(ids) == 20
    assert CostEntry.objects.count() == 1
    assert AuditEvent.objects.filter(action="cost.recorded").count() == 1
