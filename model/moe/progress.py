"""Build progress: the ``(message, fraction)`` callback every step reports through, and its shared file.

A build takes minutes, and a second process asking for the same model waits for it; the running build
therefore also writes each report to a file beside the build, where waiting processes read and relay it
(the CLI draws the reports as a tqdm bar, the UI as a progress line).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[str, float], None]


def say(progress: Progress | None, message: str, fraction: float) -> None:
    """Report to ``progress`` if there is one (every step accepts None: a silent build)."""
    if progress is not None:
        progress(message, fraction)


def progress_path(final_dir: Path) -> Path:
    """Where a running build of ``final_dir`` writes its last report: ``models/.<name>.progress.json``."""
    return final_dir.parent / f".{final_dir.name}.progress.json"


def build_progress(final_dir: Path) -> dict[str, Any] | None:
    """The running build's last progress report ({message, fraction, pid, time}), or None when none runs."""
    path = progress_path(final_dir)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    pid = report.get("pid")
    return report if isinstance(pid, int) and Path(f"/proc/{pid}").exists() else None


def recording(final_dir: Path, progress: Progress | None) -> Progress:
    """``progress``, and each report also written (atomically) where waiting processes read it."""
    path = progress_path(final_dir)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")

    def report(message: str, fraction: float) -> None:
        tmp.write_text(
            json.dumps({"message": message, "fraction": fraction, "pid": os.getpid(), "time": time.time()}),
            encoding="utf-8",
        )
        os.replace(tmp, path)
        say(progress, message, fraction)

    return report
