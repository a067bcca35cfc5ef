"""One build of a model at a time, across threads and processes.

Two builders of the same model (the UI and the CLI, two workers) would each write the model and replace,
that is delete, the other's output. The build therefore runs under an flock on a file beside it, which the
kernel releases if the holder dies; a waiter relays the running build's progress, then re-checks the
manifest and reuses the result.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from model.moe.progress import Progress, build_progress, progress_path, say


def lock_path(final_dir: Path) -> Path:
    """The lock file of a build of ``final_dir``: ``models/.<name>.lock``."""
    return final_dir.parent / f".{final_dir.name}.lock"


@contextmanager
def build_lock(final_dir: Path, progress: Progress | None, poll_s: float = 0.5) -> Iterator[None]:
    """Exclusive flock on the build's lock file; while another holder builds, relay its progress."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(final_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                running = build_progress(final_dir)
                if running is None:
                    say(progress, "waiting for another build of this model to finish", 0.0)
                else:
                    say(
                        progress,
                        f"another process is building this model: {running['message']}",
                        float(running["fraction"]),
                    )
                time.sleep(poll_s)
        try:
            yield
        finally:
            progress_path(final_dir).unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
