"""Ingest locks: an flock under the data dir (processes of one machine) and a PostgreSQL advisory lock
(app processes on several machines sharing one database), so two ingests serialise instead of interleaving."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select


class LockTimeout(RuntimeError):
    """Waited for a lock longer than allowed: another ingest holds it."""


@contextmanager
def file_lock(path: Path, *, timeout_s: float | None = None, poll_s: float = 0.2) -> Iterator[None]:
    """An exclusive flock; the kernel releases it when the holder dies, even by SIGKILL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise LockTimeout(f"another process holds {path} (an ingest is running)") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# Advisory-lock key space of sparq: (this class id, a hash of the schema), so that installations sharing one
# PostgreSQL database in different schemas (and other applications) never wait for each other.
ADVISORY_CLASS_ID = 0x53505251  # "SPRQ"


@contextmanager
def advisory_lock(
    engine: Engine, name: str, *, timeout_s: float | None = None, poll_s: float = 0.2
) -> Iterator[None]:
    """An exclusive PostgreSQL advisory lock named `name` within the connection's schema, held on a dedicated
    connection for the block, so ingests on different machines sharing the database serialise (a file lock
    only covers one data dir). The server releases it when the holder's connection ends, even by SIGKILL.
    A no-op on other databases: SQLite lives in the data dir, which `file_lock` covers."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = select(func.hashtext(func.concat(func.current_schema(), ":", name)))
    with engine.connect().execution_options(
        isolation_level="AUTOCOMMIT"
    ) as conn:  # never idle in a transaction
        lock_key = int(conn.execute(key).scalar_one())
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not conn.scalar(select(func.pg_try_advisory_lock(ADVISORY_CLASS_ID, lock_key))):
            if deadline is not None and time.monotonic() > deadline:
                raise LockTimeout(f"another node holds the advisory lock {name!r} (an ingest is running)")
            time.sleep(poll_s)
        try:
            yield
        finally:
            if not conn.closed and not conn.invalidated:
                conn.scalar(select(func.pg_advisory_unlock(ADVISORY_CLASS_ID, lock_key)))
