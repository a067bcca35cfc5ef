"""A readers-writer lock: many searches of a FAISS index at once, but add/remove/replace alone.

FAISS indexes are not safe to search while they are mutated (a growing IndexFlat or HNSW graph reallocates
under a reader). FAISS releases the GIL while it searches, so readers holding the shared side really run in
parallel; a copy-on-write index would copy the whole index per write instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Shared (`read`) or exclusive (`write`) access. A waiting writer holds back new readers, so a stream of
    searches cannot starve an ingest. Re-entrant per thread: a reader may read again, a writer may read or
    write again; a reader asking to write is refused (two such readers would deadlock each other)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared, so searches run together; re-entrant, and allowed inside this thread's write."""
        me = threading.get_ident()
        depth = getattr(self._local, "reads", 0)
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
                nested_in_write = True
            else:
                nested_in_write = False
                if depth == 0:
                    while self._writer is not None or self._writers_waiting:
                        self._cond.wait()
                    self._readers += 1
        if not nested_in_write:
            self._local.reads = depth + 1
        try:
            yield
        finally:
            with self._cond:
                if nested_in_write:
                    self._writer_depth -= 1
                else:
                    self._local.reads = depth
                    if depth == 0:
                        self._readers -= 1
                        if self._readers == 0:
                            self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively (FAISS must not be searched while it changes); refused while this thread reads."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                if getattr(self._local, "reads", 0):
                    raise RuntimeError("a thread holding the read lock cannot take the write lock (deadlock)")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer = me
                self._writer_depth = 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._cond.notify_all()
