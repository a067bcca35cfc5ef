"""Loaders run in worker processes with a time and a memory limit: a file that makes its parser spin or
blow up costs that one file, with a clear reason, never the ingest; workers are reused between files."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from ingestion.isolation import LoaderPool
from ingestion.loaders.base import LoaderError, UnsupportedFormat


def slow_html(path: Path, items: int = 40_000) -> Path:
    """A real HTML page that takes seconds to parse (tables and paragraphs, about 4 MB)."""
    body = "".join(
        f"<table><tr><td>cell {i}</td><td>value {i}</td></tr></table><p>paragraph {i} of the report</p>"
        for i in range(items)
    )
    path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    return path


def big_text(path: Path, mb: int = 100) -> Path:
    """Plain text well inside the file-size limit whose parse needs more memory than the test allows."""
    line = ("quarterly figures " * 50 + "\n").encode()
    with path.open("wb") as fh:
        for _ in range(mb * 1024 * 1024 // len(line)):
            fh.write(line)
    return path


def good_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"note{i:02d}.txt"
        p.write_text(f"Note {i}: the unicorn budget for team {i} is {1000 + i} euros.", encoding="utf-8")
        paths.append(p)
    return paths


def test_timeout_and_memory_fail_one_file_each_and_the_pool_recovers(tmp_path: Path) -> None:
    notes = good_files(tmp_path / "ok", 4)
    slow = slow_html(tmp_path / "slow.html")  # ~4 s and ~200 MB to parse
    big = big_text(tmp_path / "big.txt")
    with LoaderPool(1, timeout_s=1.0, memory_mb=2048) as pool:
        assert "Note 0" in pool.load(notes[0], max_bytes=1 << 30).sections[0].text
        t = time.monotonic()
        with pytest.raises(LoaderError, match=r"timed out after 1 s"):
            pool.load(slow, max_bytes=1 << 30)
        assert time.monotonic() - t < 5  # stopped at its limit, not parsed to the end
        assert "Note 1" in pool.load(notes[1], max_bytes=1 << 30).sections[0].text
        assert pool.processes_started == 2  # one at first, one after the timeout
    with LoaderPool(1, timeout_s=60, memory_mb=64) as pool:
        assert "Note 2" in pool.load(notes[2], max_bytes=1 << 30).sections[0].text
        with pytest.raises(LoaderError, match=r"exceeded 64 MiB of memory"):
            pool.load(big, max_bytes=1 << 30)
        assert "Note 3" in pool.load(notes[3], max_bytes=1 << 30).sections[0].text
        # the loaders' own errors keep their type and reason
        with pytest.raises(UnsupportedFormat):
            pool.load(tmp_path / "x.unknown-ext", max_bytes=1 << 30)
        (tmp_path / "empty.txt").write_bytes(b"")
        with pytest.raises(LoaderError, match="empty file"):
            pool.load(tmp_path / "empty.txt", max_bytes=1 << 30)
        assert pool.processes_started == 2  # one at first, a fresh one after the memory error


def test_a_worker_killed_mid_parse_is_reported_and_replaced(tmp_path: Path) -> None:
    slow = slow_html(tmp_path / "slow.html")
    (note,) = good_files(tmp_path / "ok", 1)
    with LoaderPool(1, timeout_s=60, memory_mb=2048) as pool:
        pool.load(note, max_bytes=1 << 30)
        (pid,) = pool.worker_pids()
        killer = threading.Timer(0.5, os.kill, args=(pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(LoaderError, match="the loader process died of SIGKILL"):
            pool.load(slow, max_bytes=1 << 30)
        killer.join()
        assert "Note 0" in pool.load(note, max_bytes=1 << 30).sections[0].text
        assert pool.worker_pids() != [pid]


def test_workers_are_reused_and_parse_in_parallel(tmp_path: Path) -> None:
    notes = good_files(tmp_path / "ok", 40)
    with LoaderPool(2, timeout_s=60) as pool:
        results: list[str] = []
        lock = threading.Lock()

        def load_some(paths: list[Path]) -> None:
            for p in paths:
                text = pool.load(p, max_bytes=1 << 20).sections[0].text
                with lock:
                    results.append(text)

        threads = [threading.Thread(target=load_some, args=(notes[i::2],)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == sorted(p.read_text(encoding="utf-8") for p in notes)
        assert pool.processes_started == 2
        assert len(set(pool.worker_pids())) == 2


@pytest.mark.parametrize("nice", [0, 7])
def test_workers_run_below_the_ingest_priority_by_the_given_nice(tmp_path: Path, nice: int) -> None:
    (note,) = good_files(tmp_path / "ok", 1)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    with LoaderPool(1, nice=nice) as pool:
        assert "unicorn budget" in pool.load(note, max_bytes=1 << 20).sections[0].text
        (pid,) = pool.worker_pids()
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, ours + nice)


def test_a_nice_outside_what_the_kernel_takes_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 19"):
        LoaderPool(1, nice=20)
    with pytest.raises(ValueError, match="between 0 and 19"):
        LoaderPool(1, nice=-1)


def test_closed_pool_refuses_work(tmp_path: Path) -> None:
    (note,) = good_files(tmp_path, 1)
    pool = LoaderPool(1)
    pool.load(note, max_bytes=1 << 20)
    (pid,) = pool.worker_pids()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.load(note, max_bytes=1 << 20)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_an_ingest_reports_the_spinning_and_the_exploding_file_and_keeps_the_rest(tmp_path: Path) -> None:
    """Through the product's path: `Assistant.ingest` with the loader limits from settings."""
    from app.assistant import Assistant

    folder = tmp_path / "docs"
    good_files(folder, 10)
    slow_html(folder / "spinning.html")  # ~4 s, ~200 MB: stopped by the time limit
    big_text(folder / "exploding.txt", mb=250)  # needs > 500 MB: stopped by the memory limit
    with Assistant(
        data_dir=tmp_path / "data",
        loader_timeout_s=1.0,
        loader_memory_mb=400,
        loader_workers=2,
        max_file_mb=300,
    ) as a:
        summary = a.ingest(folder, collection="c")
        failures = {Path(f.path).name: f.error for f in summary.failures}
        assert set(failures) == {"spinning.html", "exploding.txt"}, failures
        assert "timed out after 1 s" in failures["spinning.html"]
        assert "exceeded 400 MiB of memory" in failures["exploding.txt"]
        assert summary.files_new == 10
        hits = a.search("unicorn budget for team 7", k=3)
        assert any("team 7" in h.text for h in hits)
        docs = {Path(d.path).name: d for d in a.documents(collection="c")}
        assert docs["spinning.html"].status == "failed" and "timed out" in (docs["spinning.html"].error or "")
        # unchanged next time: the failed files are reported again, nothing is parsed anew
        again = a.ingest(folder, collection="c")
        assert again.files_new == 0 and {Path(f.path).name for f in again.failures} == set(failures)


def test_the_parser_process_gets_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARQ_DATABASE_URL", "postgresql://sparq:hunter2@db/sparq")
    monkeypatch.setenv("SPARQ_LDAP_BIND_PASSWORD", "hunter2")
    monkeypatch.setenv("MAILBOX_PW", "hunter2")  # a source's password_env may have any name
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    (note,) = good_files(tmp_path, 1)
    with LoaderPool(1) as pool:
        pool.load(note, max_bytes=1 << 20)
        (pid,) = pool.worker_pids()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"LC_ALL=C.UTF-8" in environ and any(e.startswith(b"PATH=") for e in environ)
    assert not any(b"hunter2" in entry for entry in environ)
