"""Loaders in worker processes with a time and a memory limit.

A PDF that makes its parser spin, or a file that decompresses into gigabytes, must cost one failed file
with a reason ("timed out after 120 s", "exceeded 2048 MiB of memory"), never the ingest or the server
that runs it. Each file is parsed in a worker process; a worker that overruns its time is killed and
replaced, and its memory is capped by `RLIMIT_AS` above what it used at start. Workers are reused, so
small files do not pay a process start each.

OCR settings are given to the pool (the product passes its own; ingestion never reads app's settings) and
sent with each file, with the time limit: OCR in the worker stops just before it and keeps the pages read.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ingestion.loader_worker import read_frame, write_frame
from ingestion.loaders.base import LoadedDocument, LoaderError, UnsupportedFormat
from ingestion.ocr import OcrSettings

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_MB = 2048
# Parsers run below the ingest process's CPU priority: on a small machine the encoder (the ingest's
# bottleneck) and the answer path keep their cores, and parsing takes whatever they leave, which is all of
# it when they wait. Measured by bench/ingest.py --files (README, Ingest).
DEFAULT_NICE = 10
_START_TIMEOUT_S = 60.0
_SPAWN = object()
# What a parser process may see of the environment: the system's basics (locale, paths, temp dirs, thread
# limits, Tesseract's data). Everything else stays out, since any variable may hold a credential whatever its
# name (a source's password_env is chosen by the admin).
_WORKER_ENV = re.compile(
    r"PATH|HOME|LANG|LANGUAGE|LC_[A-Z]+|TZ|TMPDIR|TEMP|TMP|LD_LIBRARY_PATH|TESSDATA_PREFIX"
    r"|OMP_[A-Z_]+|OPENBLAS_[A-Z_]+|MKL_[A-Z_]+|MALLOC_[A-Z_]+"
)
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]

    def readable(self, timeout_s: float) -> bool:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        return bool(ready)


class LoaderPool:
    """Parse files in reusable worker processes, one file per worker at a time.

    `load` is thread-safe: up to `workers` callers parse in parallel, the others wait for a free worker.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        ocr: OcrSettings | None = None,
        nice: int = DEFAULT_NICE,
    ) -> None:
        """`ocr`: the languages and resolution OCR uses in the workers (default: OcrSettings()); `nice`: how
        much lower than this process the workers run (0: the same priority)."""
        if not 0 <= nice <= 19:
            raise ValueError(f"loader nice must be between 0 and 19, got {nice}")
        if timeout_s <= 0:
            raise ValueError(f"loader timeout must be positive, got {timeout_s}")
        if memory_mb < 64:
            raise ValueError(f"loader memory limit must be at least 64 MiB, got {memory_mb}")
        self.size = workers if workers is not None else max(1, len(os.sched_getaffinity(0)))
        if self.size < 1:
            raise ValueError(f"a loader pool needs at least one worker, got {workers}")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.ocr = ocr if ocr is not None else OcrSettings()
        self.nice = nice
        # Each slot is an idle worker, or _SPAWN: leave to start one (at first use, or after one was killed).
        self._idle: queue.LifoQueue[_Worker | object | None] = queue.LifoQueue()  # idle workers first
        for _ in range(self.size):
            self._idle.put(_SPAWN)
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._closed = False
        self.processes_started = 0

    # --- workers ----------------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        # The parser reads hostile files: it gets no credentials (database URL, API keys, bind passwords,
        # mailbox passwords in variables of any name): only the variables it needs to run.
        env = {k: v for k, v in os.environ.items() if _WORKER_ENV.fullmatch(k)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingestion.loader_worker",
                str(self.memory_mb * 1024 * 1024),
                str(self.nice),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        worker = _Worker(process)
        if not worker.readable(_START_TIMEOUT_S):
            self._kill(process)
            raise RuntimeError(f"a loader worker did not start within {_START_TIMEOUT_S:.0f} s")
        assert process.stdout is not None
        hello = read_frame(process.stdout)
        if not hello or hello[0] != "ready":
            self._kill(process)
            raise RuntimeError(f"a loader worker failed to start (exit code {process.poll()})")
        with self._lock:
            self._workers[id(worker)] = worker
            self.processes_started += 1
        return worker

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.pop(id(worker), None)
        self._kill(worker.process)
        self._idle.put(_SPAWN)

    def _acquire(self) -> _Worker:
        slot = self._idle.get()
        if slot is None or self._closed:  # closed while waiting: wake the next waiter too
            self._idle.put(None)
            raise RuntimeError("the loader pool is closed")
        if isinstance(slot, _Worker):
            return slot
        try:
            return self._spawn()
        except BaseException:
            self._idle.put(_SPAWN)
            raise

    # --- the call ---------------------------------------------------------------------------------------
    def load(self, path: Path, *, max_bytes: int) -> LoadedDocument:
        """Parse one file in a worker; LoaderError (with the reason) for anything that goes wrong there."""
        worker = self._acquire()
        process = worker.process
        assert process.stdin is not None and process.stdout is not None
        healthy = False
        try:
            try:
                write_frame(process.stdin, (str(path), max_bytes, self.timeout_s, self.ocr))
            except OSError as exc:
                raise LoaderError(f"the loader process is gone ({exc}); file not read") from exc
            if not worker.readable(self.timeout_s):
                raise LoaderError(f"timed out after {self.timeout_s:g} s; the loader was stopped")
            reply = read_frame(process.stdout)
            if reply is None:
                process.wait(timeout=10)
                raise LoaderError(self._death_reason(process.returncode))
            healthy = (
                reply[0] != "memory"
            )  # after a MemoryError, a fresh process rather than a half-broken one
        finally:
            if healthy:
                self._idle.put(worker)
            else:
                self._retire(worker)
        kind, value = reply
        if kind == "ok":
            assert isinstance(value, LoadedDocument)
            return value
        if kind == "memory":
            raise LoaderError(f"exceeded {self.memory_mb} MiB of memory while parsing; the file was not read")
        if kind == "unsupported":
            raise UnsupportedFormat(value)
        if kind == "os":
            raise OSError(value)
        raise LoaderError(value)

    def _death_reason(self, code: int | None) -> str:
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = ""
            if name in ("SIGKILL", "SIGABRT", "SIGSEGV"):
                hint = f" (perhaps out of memory: the limit is {self.memory_mb} MiB)"
            return f"the loader process died of {name} while parsing{hint}"
        return f"the loader process exited with code {code} while parsing"

    def worker_pids(self) -> list[int]:
        """The running workers' process ids (for operators and tests)."""
        with self._lock:
            return [w.process.pid for w in self._workers.values()]

    def close(self) -> None:
        """Stop every worker (idle ones at once; busy ones as their callers return)."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        self._idle.put(None)
        for worker in workers:
            self._kill(worker.process)

    def __enter__(self) -> LoaderPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
