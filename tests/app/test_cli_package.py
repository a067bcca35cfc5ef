"""The CLI package's shape (issue 17): command modules never import the root, and however sparq is started
(`sparq`, `python -m app`, `python -m app.cli`) it is the same app with the same commands in the same order."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI_DIR = Path(__file__).resolve().parents[2] / "app" / "cli"
ROOT_MODULES = {"__init__.py", "__main__.py"}  # the root itself, and `python -m app.cli`, which runs it


def _root_imports(path: Path) -> list[str]:
    """Every import in PATH that reaches the root `app.cli` rather than one of its submodules."""
    submodules = {p.stem for p in CLI_DIR.glob("*.py")}
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "app.cli"]
        elif isinstance(node, ast.ImportFrom) and node.module == "app.cli":
            found += [f"app.cli.{a.name}" for a in node.names if a.name not in submodules]
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            found += [f".{a.name}" for a in node.names if a.name not in submodules]
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in CLI_DIR.glob("*.py") if p.name not in ROOT_MODULES))
def test_a_command_module_does_not_import_the_root(module):
    assert _root_imports(CLI_DIR / module) == [], f"app/cli/{module} imports the root"


def test_every_command_module_registers_itself_on_the_root():
    import app.cli

    helpers = {"common", "directory"}  # shared code, no commands of their own
    for path in sorted(CLI_DIR.glob("*.py")):
        if path.name in ROOT_MODULES or path.stem in helpers:
            continue
        module = getattr(app.cli, path.stem, None)
        assert module is not None, f"the root does not import app.cli.{path.stem}"
        assert callable(getattr(module, "register", None)), f"app.cli.{path.stem} has no register(cli)"


@pytest.mark.parametrize("launcher", [["-m", "app"], ["-m", "app.cli"]])
def test_python_dash_m_lists_the_same_commands_as_the_app(launcher):
    import typer.main

    from app.cli import cli

    expected = list(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, *launcher, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    listed = [line.strip("│ ").split()[0] for line in out.splitlines() if line.startswith("│ ")]
    assert listed[-len(expected) :] == expected
