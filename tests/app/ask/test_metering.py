"""Metering an ask: real energy meter, real generations from the small model, priced by the cost model."""

from __future__ import annotations

import pytest

from app.ask.metering import CostMeter, merge_stats
from app.costs.meter import IN_FLIGHT, CostModel, CostRecord

MESSAGES = [{"role": "user", "content": "Say hello."}]
PRICES = CostModel(pue=1.5, electricity_usd_per_kwh=0.2, cloud_prices={"cloud-x": (1.0, 2.0)})


def _meter(loaded=None) -> CostMeter:
    return CostMeter(PRICES, cpu_watts=65.0, gpu_watts=0.0, gpu=False, loaded_llm=lambda: loaded)


def test_the_generations_tokens_flops_and_energy_are_priced(small_llm):
    meter = _meter(small_llm)
    metering = meter.start()
    rewrite = small_llm.generate(MESSAGES, max_tokens=4)
    answer = small_llm.generate(MESSAGES, max_tokens=6)
    cost = meter.cost(metering, {"rewrite": rewrite, "answer": answer})
    prompt = rewrite.stats.prompt_tokens + answer.stats.prompt_tokens
    completion = rewrite.stats.completion_tokens + answer.stats.completion_tokens
    assert (cost.prompt_tokens, cost.completion_tokens) == (prompt, completion)
    assert set(cost.flops) == {"rewrite", "prefill", "decode"}
    assert cost.flops["rewrite"] == rewrite.stats.flops_total
    assert cost.flops_total == pytest.approx(rewrite.stats.flops_total + answer.stats.flops_total)
    assert cost.energy_joules > 0 and cost.wall_seconds > 0
    assert cost.electricity_usd == pytest.approx(PRICES.electricity_usd(cost.energy_joules))
    assert cost.total_usd == pytest.approx(cost.electricity_usd + cost.hardware_usd)
    assert cost.cloud_usd == {"cloud-x": pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)}
    assert cost.total_params == small_llm.info.total_params and cost.engine == small_llm.engine_name


def test_an_ask_without_a_model_costs_its_energy_only():
    meter = _meter(None)
    cost = meter.cost(meter.start(), {})
    assert (cost.prompt_tokens, cost.completion_tokens, cost.flops, cost.engine) == (0, 0, {}, "")
    assert cost.accounting == "modelled" and cost.active_params_per_token == 0.0 and cost.energy_joules >= 0


def test_a_refused_ask_is_charged_nothing_and_leaves_flight():
    meter = _meter(None)
    before = IN_FLIGHT.count
    metering = meter.start()
    assert IN_FLIGHT.count == before + 1
    assert meter.refuse(metering) == CostRecord()
    assert IN_FLIGHT.count == before


def test_merge_stats_adds_every_generation(small_llm):
    a, b = small_llm.generate(MESSAGES, max_tokens=2), small_llm.generate(MESSAGES, max_tokens=3)
    merged = merge_stats([a.stats, b.stats])
    assert merged["completion_tokens"] == a.stats.completion_tokens + b.stats.completion_tokens
    assert merged["dense_flops"] == pytest.approx(a.stats.dense_flops_total + b.stats.dense_flops_total)
