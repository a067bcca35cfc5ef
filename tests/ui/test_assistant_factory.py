"""The web app's one Assistant (app.ui.assistant_factory): built once from the SPARQ_* environment, with
the first admin, unless a test or an embedding process hands it one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.ui import assistant_factory
from app.ui.assistant_factory import get_assistant, use_assistant


@pytest.fixture
def configured(tmp_path, database_url, monkeypatch) -> Iterator[None]:
    """A server's environment: its data dir and database, and the admin password its operator chose."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPARQ_DATABASE_URL", database_url)
    monkeypatch.setenv("SPARQ_ADMIN_PASSWORD", "admin-pass-123")
    assistant_factory._shared_assistant.clear()
    yield
    assistant_factory._shared_assistant().close()  # the one each test had built
    assistant_factory._shared_assistant.clear()


def test_one_assistant_per_process_from_the_environment_with_its_first_admin(configured, tmp_path):
    first = get_assistant()
    assert get_assistant() is first
    assert first.settings.data_dir == tmp_path / "data"
    admin = first.users.authenticate("admin", "admin-pass-123")
    assert admin is not None and admin.is_admin


def test_a_given_assistant_is_served_until_the_default_is_restored(configured, assistant):
    use_assistant(assistant)
    try:
        assert get_assistant() is assistant
    finally:
        use_assistant(None)
    assert get_assistant() is not assistant
