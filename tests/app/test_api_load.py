"""The bounded load test (bench/api_load.py) as a test: 16 concurrent clients asking and searching on
loopback while an admin uploads; zero 5xx, zero cross-group passages, every query logged exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_sixteen_clients_while_uploading_get_no_5xx_no_foreign_passage_and_a_complete_log(tmp_path):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "api_load.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "api_load.py"),
            "--clients",
            "16",
            "--requests",
            "2",
            "--max-tokens",
            "8",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        cwd=ROOT,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests"] == 32
    assert report["server_errors"] == 0, report["status_counts"]
    assert report["cross_group_passages"] == 0
    assert report["chat_ids_logged_once"]
    assert report["uploads"] == [200, 200, 200]
    assert result.returncode == 0
