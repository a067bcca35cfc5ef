"""The worker process behind `ingestion.isolation.LoaderPool`: parses files sent on stdin, replies on stdout.

Started as `python -m ingestion.loader_worker MEMORY_BYTES`, not through multiprocessing, so that it never
re-imports the parent's main module (a Streamlit script, the CLI). Frames are a 4-byte big-endian length
and a pickle; requests are `(path, max_bytes, time_limit_s, ocr_settings)`, replies `(kind, value)`.

The time limit is the one the pool kills the worker at, counted from when the request is read: OCR stops
just before it and returns the pages it read (`ingestion.ocr.TimeLimit`), so a long scan is not lost whole.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import struct
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingestion.ocr import OcrSettings

HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> Any | None:
    """The next length-prefixed pickle on `stream`; None at end of stream or on a cut-off frame."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def write_frame(stream: IO[bytes], value: Any) -> None:
    """Send `value` as one length-prefixed pickle, flushed so the other side can read it at once."""
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def address_space_bytes() -> int:
    """This process's current virtual size: the baseline its memory limit is added to."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _load(
    path: str, max_bytes: int, time_limit_s: float, ocr_settings: OcrSettings, started: float
) -> tuple[str, Any]:
    from ingestion import ocr
    from ingestion.loaders import load_file
    from ingestion.loaders.base import LoaderError, UnsupportedFormat

    try:
        with ocr.for_file(ocr_settings, ocr.TimeLimit.for_file(time_limit_s, started=started)):
            return "ok", load_file(Path(path), max_bytes=max_bytes)
    except MemoryError:
        return "memory", ""
    except UnsupportedFormat as exc:
        return "unsupported", str(exc)
    except LoaderError as exc:
        return ("memory", "") if isinstance(exc.__cause__, MemoryError) else ("loader", str(exc))
    except OSError as exc:
        return "os", str(exc)


def main() -> None:
    """Parse the files the pool sends, under the memory limit, until stdin closes: a crash costs only this process."""
    memory_bytes = int(sys.argv[1])
    nice = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if nice:
        os.nice(nice)  # below the ingest process: see isolation.DEFAULT_NICE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which ends its workers
    import ingestion.loaders  # noqa: F401 - imported before the limit, so the baseline includes the parsers

    if Path("/proc/self/statm").is_file():  # Linux; elsewhere (a developer's macOS) no memory cap is set
        limit = address_space_bytes() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    else:
        print("sparq loader: no /proc/self/statm, parsing without a memory limit", file=sys.stderr)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a library that prints must not corrupt the reply stream
    write_frame(replies, ("ready", os.getpid()))
    while (request := read_frame(requests)) is not None:
        started = time.monotonic()
        path, max_bytes, time_limit_s, ocr_settings = request
        reply = _load(path, max_bytes, time_limit_s, ocr_settings, started)
        try:
            write_frame(replies, reply)
        except MemoryError:  # the document did not fit in what is left to pickle it
            write_frame(replies, ("memory", ""))


if __name__ == "__main__":
    main()
