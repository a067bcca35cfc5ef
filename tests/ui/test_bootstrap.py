"""The first admin of a fresh install (app.ui.bootstrap), on the real database."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.database import open_database
from app.ui.bootstrap import ADMIN_PASSWORD_FILE, ensure_admin
from app.users import UserDirectory


@pytest.fixture
def users(database_url: str) -> Iterator[UserDirectory]:
    engine = open_database(database_url)
    yield UserDirectory(engine)
    engine.dispose()


def test_first_run_creates_one_admin_with_a_random_password_in_a_private_file(users, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARQ_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("SPARQ_ADMIN_USER", raising=False)
    data_dir = tmp_path / "data"
    said: list[str] = []
    assert ensure_admin(users, data_dir, announce=said.append) == "admin"
    secret = data_dir / ADMIN_PASSWORD_FILE
    password = secret.read_text().strip()
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert all(password not in line for line in said) and str(secret.resolve()) in said[0]
    admin = users.authenticate("admin", password)
    assert admin is not None and admin.is_admin and admin.must_change_password
    assert ensure_admin(users, data_dir, announce=said.append) is None  # only once
    assert users.count_admins() == 1


def test_an_operators_password_and_name_are_used_as_given_and_written_nowhere(users, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARQ_ADMIN_USER", "root")
    monkeypatch.setenv("SPARQ_ADMIN_PASSWORD", "chosen-by-the-operator-1")
    data_dir = tmp_path / "data"
    said: list[str] = []
    assert ensure_admin(users, data_dir, announce=said.append) == "root"
    root = users.authenticate("root", "chosen-by-the-operator-1")
    assert root is not None and root.is_admin and not root.must_change_password
    assert not (data_dir / ADMIN_PASSWORD_FILE).exists()
    assert said == ["sparq: created admin user 'root' with the password from SPARQ_ADMIN_PASSWORD."]


def test_an_existing_admin_is_left_alone(users, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("SPARQ_ADMIN_PASSWORD", raising=False)
    users.add("boss", role="admin", password="boss-pass-1234")
    said: list[str] = []
    assert ensure_admin(users, tmp_path / "data", announce=said.append) is None
    assert said == [] and [u.name for u in users.list()] == ["boss"]
    assert not (tmp_path / "data").exists()
