"""`sparq users add/list` on a real database."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import cli


@pytest.fixture
def env(monkeypatch, tmp_path, database_url):
    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPARQ_DATABASE_URL", database_url)
    monkeypatch.delenv("SPARQ_NEW_USER_PASSWORD", raising=False)


def test_users_add_and_list(env):
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "users",
            "add",
            "alice",
            "--role",
            "employee",
            "--groups",
            "staff, finance",
            "--password",
            "alice-pass-123",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "created employee 'alice' (groups: finance, staff)" in r.output
    r = runner.invoke(
        cli, ["users", "add", "root"], input="root-pass-123\nroot-pass-123\n"
    )  # prompted, hidden
    assert r.exit_code == 0, r.output
    assert "root-pass-123" not in r.output.replace("Password: \n", "")
    r = runner.invoke(cli, ["users", "list", "--json"])
    assert json.loads(r.output) == [
        {"name": "alice", "role": "employee", "groups": ["finance", "staff"]},
        {"name": "root", "role": "employee", "groups": []},
    ]
    from app.assistant import Assistant

    with Assistant() as a:
        assert a.users.authenticate("alice", "alice-pass-123") is not None
        assert a.users.authenticate("root", "root-pass-123") is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (["users", "add", "bob", "--role", "boss", "--password", "bob-pass-123"], "role must be one of"),
        (["users", "add", "bob", "--password", "short"], "at least 8 characters"),
        (["users", "add", "../bob", "--password", "bob-pass-123"], "user names use"),
    ],
)
def test_users_add_refuses_bad_input(env, args, message):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and message in r.output


def test_users_add_refuses_a_duplicate(env):
    runner = CliRunner()
    assert runner.invoke(cli, ["users", "add", "bob", "--password", "bob-pass-123"]).exit_code == 0
    r = runner.invoke(cli, ["users", "add", "bob", "--password", "bob-pass-123"])
    assert r.exit_code == 2 and "already exists" in r.output
