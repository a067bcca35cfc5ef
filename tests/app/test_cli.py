"""The admin CLI in-process (typer's runner), on the real store configured through SPARQ_* variables."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from app.cli import cli

runner = CliRunner()
SUMMARY_KEYS = {
    "files_new",
    "files_updated",
    "files_unchanged",
    "files_failed",
    "chunks_added",
    "chunks_removed",
    "seconds",
    "failures",
}


@pytest.fixture
def env(monkeypatch, tmp_path, database_url, embedder):
    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPARQ_DATABASE_URL", database_url)
    # Reuse the session's model: the CLI builds its own Assistant, whose embedder we pre-seed.
    import app.assistant as assistant_module

    original = assistant_module.Assistant.embedder
    monkeypatch.setattr(assistant_module.Assistant, "embedder", property(lambda self: embedder))
    yield tmp_path
    monkeypatch.setattr(assistant_module.Assistant, "embedder", original)


def test_ingest_list_delete_round_trip(env, example_docs_dir):
    folder = env / "docs"
    folder.mkdir()
    for name in ("fake-text.txt", "stanley-cups.csv"):
        shutil.copy(example_docs_dir / name, folder / name)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")

    result = runner.invoke(
        cli, ["ingest", str(folder), "--collection", "hr", "--groups", "staff,all", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) >= SUMMARY_KEYS
    assert summary["files_new"] == 2 and summary["files_failed"] == 1
    assert summary["failures"][0]["path"].endswith("broken.pdf") and summary["failures"][0]["error"]

    result = runner.invoke(cli, ["ingest", str(folder), "--collection", "hr"])
    assert result.exit_code == 0, result.output
    assert "0 new, 0 updated, 2 unchanged, 1 failed" in result.stdout  # still broken, reported, not rewritten
    assert "broken.pdf" in result.stdout

    listed = json.loads(runner.invoke(cli, ["documents", "--collection", "hr", "--json"]).stdout)
    assert {d["status"] for d in listed} == {"ready", "failed"}
    assert all(d["groups"] == ["all", "staff"] for d in listed)
    cols = json.loads(runner.invoke(cli, ["collections", "--json"]).stdout)
    assert cols[0]["name"] == "hr" and cols[0]["documents"] == 3

    victim = next(d for d in listed if d["path"].endswith("stanley-cups.csv"))
    assert runner.invoke(cli, ["delete", "--document", str(victim["id"])]).exit_code == 0
    assert len(json.loads(runner.invoke(cli, ["documents", "--json"]).stdout)) == 2
    assert runner.invoke(cli, ["delete", "--collection", "hr"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["collections", "--json"]).stdout) == []


def test_cli_errors_are_clear(env):
    result = runner.invoke(cli, ["delete"])
    assert result.exit_code != 0 and "exactly one" in result.output
    result = runner.invoke(cli, ["costs", "--by", "planet"])
    assert result.exit_code != 0 and "group by one of" in result.output
    costs = runner.invoke(cli, ["costs", "--json"])
    assert costs.exit_code == 0 and json.loads(costs.stdout) == []


def test_a_wrong_setting_is_one_line_naming_it_not_a_traceback(tmp_path) -> None:
    """The console script as an admin runs it: a bad SPARQ_* value exits 2 with the variable and the rule."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARQ_")}
    env.update(SPARQ_DATA_DIR=str(tmp_path / "data"), SPARQ_SOURCE_POLL_SECONDS="-1")
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "collections"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: setting SPARQ_SOURCE_POLL_SECONDS: Input should be greater than 0"
    ]
    assert "Traceback" not in done.stderr
