"""What a query cost on-prem: energy (measured by RAPL/NVML where the machine allows, else modelled from
configured watts and CPU time, always labelled), money (electricity with PUE plus hardware amortisation),
and what the same tokens would have cost on a cloud API."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")
SECONDS_PER_YEAR = 365.25 * 24 * 3600

# USD per million tokens (input, output): public list prices, configurable via SPARQ_CLOUD_PRICES.
DEFAULT_CLOUD_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "claude-3-5-haiku": (0.80, 4.00),
}


def _rapl_domains() -> list[Path]:
    """Top-level package domains only (intel-rapl:N), so cores are not counted twice."""
    if not RAPL_ROOT.is_dir():
        return []
    found = []
    for d in sorted(RAPL_ROOT.glob("intel-rapl:*")):
        if d.name.count(":") == 1 and (d / "energy_uj").is_file():
            try:
                int((d / "energy_uj").read_text())
            except (OSError, ValueError):
                continue  # present but unreadable (common without root): fall back to the model
            found.append(d)
    return found


def _read_uj(domain: Path) -> int:
    return int((domain / "energy_uj").read_text())


def _max_uj(domain: Path) -> int:
    try:
        return int((domain / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return 2**32


@dataclass
class EnergyReading:
    joules: float
    source: str  # measured | modelled
    method: str  # rapl | nvml | cpu-time model
    cpu_seconds: float
    wall_seconds: float


class EnergyMeter:
    """Brackets a piece of work; `stop()` returns its energy."""

    def __init__(self, cpu_watts: float, gpu_watts: float = 0.0, use_gpu: bool = False) -> None:
        self.cpu_watts = cpu_watts
        self.gpu_watts = gpu_watts
        self.use_gpu = use_gpu
        self.domains = _rapl_domains()
        self._start_uj: list[int] = []
        self._start_cpu = 0.0
        self._start_wall = 0.0
        self._nvml_handle: Any = None
        self._start_gpu_mj: int | None = None

    def start(self) -> EnergyMeter:
        self._start_wall = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._start_cpu = usage.ru_utime + usage.ru_stime
        self._start_uj = [_read_uj(d) for d in self.domains]
        if self.use_gpu:
            self._start_gpu_mj = self._gpu_energy_mj()
        return self

    def _gpu_energy_mj(self) -> int | None:
        try:
            import pynvml  # optional: only on GPU servers

            if self._nvml_handle is None:
                pynvml.nvmlInit()
                self._nvml_handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml_handle))
        except Exception:  # noqa: BLE001 - no NVML: the GPU share is modelled and labelled so
            return None

    def stop(self) -> EnergyReading:
        wall = time.perf_counter() - self._start_wall
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - self._start_cpu
        if self.domains and self._start_uj:
            total_uj = 0
            for domain, start in zip(self.domains, self._start_uj, strict=True):
                now = _read_uj(domain)
                total_uj += now - start if now >= start else now + _max_uj(domain) - start
            joules, source, method = total_uj / 1e6, "measured", "rapl"
        else:
            # Package watts spread over its cores, charged for the CPU seconds this process used.
            cores = os.cpu_count() or 1
            joules, source, method = self.cpu_watts * cpu / cores, "modelled", "cpu-time model"
        if self.use_gpu:
            end = self._gpu_energy_mj()
            if end is not None and self._start_gpu_mj is not None:
                joules += (end - self._start_gpu_mj) / 1000
                method += "+nvml"
            else:
                joules += self.gpu_watts * wall
                source, method = "modelled", method + "+gpu-watts model"
        return EnergyReading(joules, source, method, cpu, wall)


@dataclass(frozen=True)
class CostModel:
    pue: float = 1.4
    electricity_usd_per_kwh: float = 0.15
    hardware_usd: float = 8000.0
    hardware_lifetime_years: float = 4.0
    hardware_utilisation: float = 0.3
    cloud_prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_CLOUD_PRICES))

    def electricity_usd(self, joules: float) -> float:
        return joules * self.pue / 3.6e6 * self.electricity_usd_per_kwh

    def hardware_usd_for(self, seconds: float) -> float:
        """The box's price spread over the seconds it is expected to do useful work in its life."""
        useful_seconds = self.hardware_lifetime_years * SECONDS_PER_YEAR * self.hardware_utilisation
        return self.hardware_usd * seconds / useful_seconds

    def cloud_usd(self, prompt_tokens: int, completion_tokens: int) -> dict[str, float]:
        return {
            name: (prompt_tokens * p_in + completion_tokens * p_out) / 1e6
            for name, (p_in, p_out) in self.cloud_prices.items()
        }


@dataclass
class CostRecord:
    """Everything the UI's cost line and the query log show for one query."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_second: float = 0.0
    total_params: float = 0.0
    active_params_per_token: float = 0.0
    flops: dict[str, float] = field(default_factory=dict)  # per stage
    flops_total: float = 0.0
    dense_flops_total: float = 0.0
    sparsity_saving: float = 0.0  # 1 - flops / dense-equivalent flops
    accounting: str = "modelled"  # measured | modelled (expert selections)
    energy_joules: float = 0.0
    energy_source: str = "modelled"
    energy_method: str = ""
    electricity_usd: float = 0.0
    hardware_usd: float = 0.0
    total_usd: float = 0.0
    cloud_usd: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        cloud = min(self.cloud_usd.values()) if self.cloud_usd else 0.0
        return (
            f"{self.prompt_tokens}+{self.completion_tokens} tokens · {self.wall_seconds:.1f} s · "
            f"{self.active_params_per_token / 1e6:.0f}M of {self.total_params / 1e6:.0f}M params active · "
            f"{self.energy_joules:.1f} J ({self.energy_source}) · ${self.total_usd:.6f} · "
            f"{self.sparsity_saving:.0%} FLOPs saved vs dense · cheapest cloud ${cloud:.6f}"
        )
