"""The meter: what one query cost on-prem, measured while it runs.

Energy is measured by RAPL/NVML where the machine allows, else modelled from configured watts and CPU time
(always labelled which); money is electricity with PUE plus hardware amortisation; beside it, what the same
tokens would have cost on a cloud API. One module, because the reading, the prices and the record the UI and
the ledger show are one measurement: the ledger (app.costs.ledger) only stores what this module measured."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
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


TASKS = Path("/proc/self/task")
CPU_METHOD_THREADS = "thread+native-share"
CPU_METHOD_PROCESS = "process-share"


class WorkInFlight:
    """The work in flight in this process (queries, ingests), so time and CPU that no one Python thread owns
    (llama.cpp's and the BLAS/OpenMP pools' native threads, the box itself) are shared among them instead
    of charged whole to each.

    `virtual` is the integral of dt / n(t) over the time n(t) > 0 pieces of work were in flight: a piece of
    work's share of the elapsed time is the difference of `virtual` at its end and at its start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[int] = set()
        self._next = 0
        self._virtual = 0.0
        self._last = time.perf_counter()

    def _advance(self) -> float:
        now = time.perf_counter()
        if self._active:
            self._virtual += (now - self._last) / len(self._active)
        self._last = now
        return self._virtual

    def enter(self) -> tuple[int, float]:
        """Put one piece of work in flight: (its token for `leave`, `virtual` now)."""
        with self._lock:
            virtual = self._advance()
            self._next += 1
            self._active.add(self._next)
            return self._next, virtual

    def leave(self, token: int) -> float:
        """Take the work of `token` out of flight (again is harmless); returns `virtual` now."""
        with self._lock:
            virtual = self._advance()
            self._active.discard(token)
            return virtual

    def now(self) -> float:
        """`virtual` now, for a meter that never entered."""
        with self._lock:
            return self._advance()

    @property
    def count(self) -> int:
        """How many pieces of work are in flight now."""
        with self._lock:
            return len(self._active)


IN_FLIGHT = WorkInFlight()  # the process's one account of its work in flight


@contextmanager
def work_in_flight() -> Iterator[None]:
    """Mark work that is not metered (an ingest) as in flight, so concurrent queries share the process's
    native CPU and the hardware's time with it rather than being charged for it."""
    token, _ = IN_FLIGHT.enter()
    try:
        yield
    finally:
        IN_FLIGHT.leave(token)


def _task_cpu_ns(tid: int) -> int | None:
    """A thread's CPU time (the kernel's sum_exec_runtime, the clock behind CLOCK_THREAD_CPUTIME_ID)."""
    try:
        return int((TASKS / str(tid) / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # the thread ended, or no /proc


def _python_threads_cpu_ns() -> dict[int, int]:
    """CPU time of every live Python thread, by native id."""
    out = {}
    for thread in threading.enumerate():
        tid = thread.native_id
        if tid is not None and (ns := _task_cpu_ns(tid)) is not None:
            out[tid] = ns
    return out


@dataclass
class EnergyReading:
    """What `EnergyMeter.stop` read: the energy of one piece of work, and how it was found."""

    joules: float
    source: str  # measured | modelled
    method: str  # rapl | nvml | cpu-time model (with the share applied)
    cpu_seconds: float  # this work's CPU time (see cpu_method)
    wall_seconds: float
    cpu_method: str = CPU_METHOD_THREADS  # thread+native-share | process-share
    process_cpu_seconds: float = 0.0  # the whole process over the same interval, for comparison
    hardware_seconds: float = 0.0  # this work's share of the elapsed time (wall / concurrent work)


class EnergyMeter:
    """Brackets a piece of work; `stop()` returns its energy.

    CPU is charged as the CPU time of the thread that started the meter plus a share of the CPU of the
    process's native threads (llama.cpp generation and BLAS/OpenMP pools run outside any Python thread);
    the share is the time-weighted 1/n of the n pieces of work (metered queries, `work_in_flight()` ingests) in
    flight. Other Python threads (another query, an ingest's workers) are not charged to this one. Where
    threads cannot be read (no /proc), the process's CPU time is shared by the same 1/n: `process-share`."""

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
        self._token: int | None = None
        self._start_virtual = 0.0
        self._tid: int | None = None
        self._start_own_ns: int | None = None
        self._start_threads: dict[int, int] = {}
        self._finalizer: weakref.finalize | None = None

    def start(self) -> EnergyMeter:
        """Put the work in flight and read every counter; returns the meter, so `EnergyMeter(...).start()`."""
        self._token, self._start_virtual = IN_FLIGHT.enter()
        # A meter dropped without stop() (an abandoned generator) must not stay in flight for ever.
        self._finalizer = weakref.finalize(self, IN_FLIGHT.leave, self._token)
        self._start_wall = time.perf_counter()
        self._tid = threading.get_native_id()
        self._start_threads = _python_threads_cpu_ns()
        self._start_own_ns = self._start_threads.get(self._tid)
        self._start_cpu = time.process_time()
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
        except Exception:
            return None

    def _own_cpu(self, process_cpu: float, share: float) -> tuple[float, str]:
        """(CPU seconds charged to this work, the method used)."""
        end_threads = _python_threads_cpu_ns()
        own_end = end_threads.get(self._tid) if self._tid is not None else None
        if self._start_own_ns is None or own_end is None:
            return process_cpu * share, CPU_METHOD_PROCESS
        own = (own_end - self._start_own_ns) / 1e9
        # Python threads that started within the interval count from zero.
        python = sum(end - self._start_threads.get(tid, 0) for tid, end in end_threads.items()) / 1e9
        native = max(0.0, process_cpu - python)
        return own + native * share, CPU_METHOD_THREADS

    def stop(self) -> EnergyReading:
        """Take the work out of flight and return its energy since `start`."""
        wall = time.perf_counter() - self._start_wall
        process_cpu = time.process_time() - self._start_cpu
        end_virtual = IN_FLIGHT.leave(self._token) if self._token is not None else IN_FLIGHT.now()
        if self._finalizer is not None:
            self._finalizer.detach()
        hardware_seconds = min(wall, max(0.0, end_virtual - self._start_virtual))
        share = hardware_seconds / wall if wall > 0 else 1.0
        cpu, cpu_method = self._own_cpu(process_cpu, share)
        if self.domains and self._start_uj:
            total_uj = 0
            for domain, start in zip(self.domains, self._start_uj, strict=True):
                now = _read_uj(domain)
                total_uj += now - start if now >= start else now + _max_uj(domain) - start
            # The package's energy over the interval, in proportion to this work's part of the process's CPU.
            fraction = min(1.0, cpu / process_cpu) if process_cpu > 0 else share
            joules, source, method = total_uj / 1e6 * fraction, "measured", "rapl"
        else:
            # Package watts spread over its cores, charged for the CPU seconds this work used.
            cores = os.cpu_count() or 1
            joules, source, method = self.cpu_watts * cpu / cores, "modelled", "cpu-time model"
        if self.use_gpu:
            end = self._gpu_energy_mj()
            if end is not None and self._start_gpu_mj is not None:
                joules += (end - self._start_gpu_mj) / 1000 * share
                method += "+nvml"
            else:
                joules += self.gpu_watts * hardware_seconds
                source, method = "modelled", method + "+gpu-watts model"
        return EnergyReading(joules, source, method, cpu, wall, cpu_method, process_cpu, hardware_seconds)


@dataclass(frozen=True)
class CostModel:
    """The prices that turn a reading into money: electricity (with the data centre's PUE), the box's
    amortisation, and cloud list prices per million tokens for the comparison."""

    pue: float = 1.4
    electricity_usd_per_kwh: float = 0.15
    hardware_usd: float = 8000.0
    hardware_lifetime_years: float = 4.0
    hardware_utilisation: float = 0.3
    cloud_prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_CLOUD_PRICES))

    def electricity_usd(self, joules: float) -> float:
        """The electricity for `joules` at the wall (PUE applied)."""
        return joules * self.pue / 3.6e6 * self.electricity_usd_per_kwh

    def hardware_usd_for(self, seconds: float) -> float:
        """The box's price spread over the seconds it is expected to do useful work in its life."""
        useful_seconds = self.hardware_lifetime_years * SECONDS_PER_YEAR * self.hardware_utilisation
        return self.hardware_usd * seconds / useful_seconds

    def cloud_usd(self, prompt_tokens: int, completion_tokens: int) -> dict[str, float]:
        """What the same tokens would cost on each configured cloud model."""
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
    cpu_seconds: float = 0.0  # this query's CPU time, by cpu_time_method
    cpu_time_method: str = ""  # thread+native-share | process-share (see EnergyMeter)
    hardware_seconds: float = 0.0  # the box's time charged: wall time shared among concurrent work
    electricity_usd: float = 0.0
    hardware_usd: float = 0.0
    total_usd: float = 0.0
    cloud_usd: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    engine: str = ""  # the engine that served the answer (LLMEngine.engine_name); "" when no model ran

    def to_dict(self) -> dict[str, Any]:
        """Every figure by name (the API's and the ledger's `details.cost`)."""
        return asdict(self)

    def summary_line(self) -> str:
        """The one-line cost `sparq ask` prints."""
        cloud = min(self.cloud_usd.values()) if self.cloud_usd else 0.0
        return (
            f"{self.prompt_tokens}+{self.completion_tokens} tokens · {self.wall_seconds:.1f} s · "
            f"{self.active_params_per_token / 1e6:.0f}M of {self.total_params / 1e6:.0f}M params active · "
            f"{self.energy_joules:.1f} J ({self.energy_source}) · ${self.total_usd:.6f} · "
            f"{self.sparsity_saving:.0%} FLOPs saved vs dense · cheapest cloud ${cloud:.6f}"
        )
