"""The energy meter charges a query for its own CPU, not for what other threads of the process burn beside
it (another query, an ingest), while the native threads it drives (BLAS, llama.cpp) still count."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest

from app.costs.meter import EnergyMeter, EnergyReading

BUFFER = b"x" * (1 << 20)  # hashlib releases the GIL for buffers this large


def _hash_work() -> None:
    hashlib.sha256(BUFFER).digest()


def _python_work() -> None:
    sum(i * i for i in range(20_000))  # holds the GIL


def _isolated(check: str, *args: object) -> str | None:
    """Run a check in a fresh process: the meter accounts for the whole process, so the test must be alone
    in one (a long test session leaves other threads and metered work behind)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(globals()[check], args)


# gil-released is slow-marked: on a clean CI run its burner thread made too little progress within 30 s
# (passes alone and under load here); a scheduling-dependent check must not gate CI.
@pytest.mark.parametrize(
    "work",
    [pytest.param("_hash_work", marks=pytest.mark.slow), "_python_work"],
    ids=["gil-released", "gil-held"],
)
def test_meter_charges_its_own_thread_not_a_concurrent_burner(work: str) -> None:
    _isolated("_check_own_thread_only", work)


def test_native_threads_the_query_drives_are_charged_to_it() -> None:
    """BLAS worker threads are no Python thread: alone in the process, their CPU is the query's."""
    if _isolated("_check_native_threads") == "skip":
        pytest.skip("BLAS ran in the calling thread only: no native threads to account")


def test_box_time_is_shared_among_work_in_flight() -> None:
    """Two queries over the same 0.3 s, plus an ingest for the middle 0.1 s, are each charged less than the
    wall time for the hardware: the shares add up to the elapsed time."""
    _isolated("_check_box_time_shared")


def _check_own_thread_only(work_name: str) -> None:
    work = globals()[work_name]
    stop = threading.Event()
    burner_cpu = [0.0]

    def burner() -> None:
        """Another query's work in the same process: it burns CPU until told to stop."""
        meter = EnergyMeter(cpu_watts=100.0).start()
        start = time.thread_time()
        while not stop.is_set():
            work()
            burner_cpu[0] = time.thread_time() - start
        meter.stop()

    thread = threading.Thread(target=burner)
    thread.start()
    try:
        time.sleep(0.05)
        meter = EnergyMeter(cpu_watts=100.0).start()  # this (the test's) thread is the query
        process0, own0, burner0 = time.process_time(), time.thread_time(), burner_cpu[0]
        # Work until this thread used 0.3 s of CPU and the burner at least 0.8 times as much in the same
        # interval. Not "as much": with the GIL the two alternate, the gap between them is a random walk, and
        # on a loaded CI machine it stayed on the wrong side of zero for the whole deadline.
        deadline = time.monotonic() + 60
        while time.thread_time() - own0 < 0.3 or burner_cpu[0] - burner0 < 0.8 * (time.thread_time() - own0):
            work()
            assert time.monotonic() < deadline, "the burner thread got no CPU"
        own = time.thread_time() - own0
        reading = meter.stop()
        process = time.process_time() - process0
    finally:
        stop.set()
        thread.join(timeout=60)
    assert isinstance(reading, EnergyReading)
    assert process > 1.5 * own  # the burner did run beside it
    assert reading.cpu_seconds < 0.7 * process, (reading.cpu_seconds, own, process)
    assert reading.cpu_seconds >= 0.9 * own, (reading.cpu_seconds, own, process)
    assert reading.cpu_method == "thread+native-share"
    assert reading.process_cpu_seconds == pytest.approx(process, rel=0.2)


def _check_native_threads() -> str | None:
    a = np.random.default_rng(0).standard_normal((1200, 1200))
    meter = EnergyMeter(cpu_watts=100.0).start()
    process0, own0 = time.process_time(), time.thread_time()
    for _ in range(6):
        a @ a
    own, process = time.thread_time() - own0, time.process_time() - process0
    reading = meter.stop()
    if process - own < 0.05:
        return "skip"
    assert reading.cpu_seconds >= 0.9 * process, (reading.cpu_seconds, own, process)
    return None


def _check_box_time_shared() -> None:
    from app.costs.meter import work_in_flight

    a = EnergyMeter(cpu_watts=100.0).start()
    b = EnergyMeter(cpu_watts=100.0).start()
    time.sleep(0.1)
    with work_in_flight():
        time.sleep(0.1)
    time.sleep(0.1)
    ra, rb = a.stop(), b.stop()
    assert ra.wall_seconds >= 0.3 and rb.wall_seconds >= 0.3
    expected = 0.1 / 2 + 0.1 / 3 + 0.1 / 2  # ~0.133 s each
    assert ra.hardware_seconds == pytest.approx(expected, abs=0.03)
    assert rb.hardware_seconds == pytest.approx(expected, abs=0.03)
    alone = EnergyMeter(cpu_watts=100.0).start()
    time.sleep(0.05)
    r = alone.stop()
    assert r.hardware_seconds == pytest.approx(r.wall_seconds, rel=0.05)
