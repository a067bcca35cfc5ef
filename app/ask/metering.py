"""Step 6: what the ask cost: energy metered over the whole ask, tokens and FLOPs from every generation
(rewrite, answer, retry), priced by the cost model."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.costs.meter import CostModel, CostRecord, EnergyMeter
from model.base import Generation, GenerationStats, LLMEngine


@dataclass(frozen=True)
class Metering:
    """One ask's meter, running since `started` (perf_counter seconds)."""

    meter: EnergyMeter
    started: float


def merge_stats(parts: Sequence[GenerationStats]) -> dict[str, float]:
    """Tokens and FLOPs summed over an ask's generations (rewrite, answer, retry), for its one cost record."""
    return {
        "prompt_tokens": sum(p.prompt_tokens for p in parts),
        "completion_tokens": sum(p.completion_tokens for p in parts),
        "flops": sum(p.flops_prefill + p.flops_decode for p in parts),
        "dense_flops": sum(p.dense_flops_prefill + p.dense_flops_decode for p in parts),
    }


class CostMeter:
    """Starts an ask's meter and turns it, with the generations that ran, into its CostRecord."""

    def __init__(
        self,
        cost_model: CostModel,
        *,
        cpu_watts: float,
        gpu_watts: float,
        gpu: bool,
        loaded_llm: Callable[[], LLMEngine | None],
    ) -> None:
        self.cost_model = cost_model
        self.cpu_watts = cpu_watts
        self.gpu_watts = gpu_watts
        self.gpu = gpu
        self._loaded_llm = loaded_llm  # never loads a model: a refused ask has none to describe

    def start(self) -> Metering:
        """Start metering an ask: its energy and wall time run from here."""
        started = time.perf_counter()
        return Metering(EnergyMeter(self.cpu_watts, self.gpu_watts, self.gpu).start(), started)

    def refuse(self, metering: Metering) -> CostRecord:
        """Stop the meter of an ask refused for budget: the work leaves flight, the refusal is charged nothing."""
        metering.meter.stop()
        return CostRecord()

    def cost(self, metering: Metering, gens: Mapping[str, Generation]) -> CostRecord:
        """Stop the meter; `gens` by role (rewrite, answer, retry) in the order they ran."""
        energy = metering.meter.stop()
        wall = time.perf_counter() - metering.started
        stats = [g.stats for g in gens.values()]
        merged = merge_stats(stats)
        llm = self._loaded_llm()
        total_params = float(llm.info.total_params) if llm is not None else 0.0
        decode_tokens = sum(s.completion_tokens for s in stats)
        decode_s = sum(s.decode_seconds for s in stats)
        active = (
            sum(s.active_params_per_token * (s.prompt_tokens + s.completion_tokens) for s in stats)
            / max(1, merged["prompt_tokens"] + merged["completion_tokens"])
            if stats
            else 0.0
        )
        flops = {}
        for role, g in gens.items():
            if role == "answer":
                flops["prefill"] = g.stats.flops_prefill
                flops["decode"] = g.stats.flops_decode
            else:
                flops[role] = g.stats.flops_total
        electricity = self.cost_model.electricity_usd(energy.joules)
        # The box's time shared among the work in flight, not the whole wall time to each query.
        hardware = self.cost_model.hardware_usd_for(energy.hardware_seconds)
        return CostRecord(
            prompt_tokens=int(merged["prompt_tokens"]),
            completion_tokens=int(merged["completion_tokens"]),
            tokens_per_second=decode_tokens / decode_s if decode_s > 0 else 0.0,
            total_params=total_params,
            active_params_per_token=active,
            flops=flops,
            flops_total=merged["flops"],
            dense_flops_total=merged["dense_flops"],
            sparsity_saving=1 - merged["flops"] / merged["dense_flops"] if merged["dense_flops"] else 0.0,
            accounting="measured" if stats and all(s.accounting == "measured" for s in stats) else "modelled",
            energy_joules=energy.joules,
            energy_source=energy.source,
            energy_method=energy.method,
            cpu_seconds=energy.cpu_seconds,
            cpu_time_method=energy.cpu_method,
            hardware_seconds=energy.hardware_seconds,
            electricity_usd=electricity,
            hardware_usd=hardware,
            total_usd=electricity + hardware,
            cloud_usd=self.cost_model.cloud_usd(
                int(merged["prompt_tokens"]), int(merged["completion_tokens"])
            ),
            wall_seconds=wall,
            engine=llm.engine_name if llm is not None else "",
        )
