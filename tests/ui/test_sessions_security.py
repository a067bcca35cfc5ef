"""Sign-in sessions on the real app (Streamlit AppTest, real database): a random token that the server
checks on every run, ended by sign-out, a password change, idle time and expiry; a throttle per client
address kept in the database; logs without typed names; the generated first-admin password changed
first; secrets that never print."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from streamlit.testing.v1 import AppTest

from app.config import Settings
from app.database import make_engine
from app.ui import session
from app.ui.assistant_factory import use_assistant
from app.ui.bootstrap import ADMIN_PASSWORD_FILE, ensure_admin
from tests.ui.conftest import ADMIN_PASSWORD, ALICE_PASSWORD

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "ui" / "main.py")
STATE_KEYS = ("sparq_user", "sparq_session")  # what a sign-in may leave in the browser session
ADDRESS_A, ADDRESS_B = "203.0.113.7", "198.51.100.2"
LIMIT = 5  # wrong passwords per (address, name) before that pair is refused


def sign_in(name: str, password: str) -> AppTest:
    """The real entry page, signed in through its form."""
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def state_of(at: AppTest) -> dict:
    return {k: at.session_state[k] for k in STATE_KEYS if k in at.session_state}


def view_as(view: str, state: dict) -> AppTest:
    """One page run in another browser tab holding a copy of `state` (a copied or stolen session)."""
    at = AppTest.from_string(f"from app.ui.views import {view}\n{view}.render()\n", default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def signed_out(at: AppTest) -> bool:
    return [e.value for e in at.error] == ["Please sign in."]


def change_password(at: AppTest, current: str, new: str) -> AppTest:
    fields = at.text_input  # current, new, again (the Account form)
    fields[0].input(current)
    fields[1].input(new)
    fields[2].input(new)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def address(monkeypatch):
    """Where the next request comes from. AppTest has no network peer (st.context.ip_address is None in
    it), so this stands in for the connection's address; the throttle itself runs unchanged."""

    def come_from(ip: str) -> None:
        monkeypatch.setattr(session, "client_address", lambda: ip, raising=False)

    come_from(ADDRESS_A)
    return come_from


def test_a_user_name_in_the_browser_state_signs_no_one_in(ui_assistant):
    at = view_as("chat", {"sparq_user": "admin"}).run()
    assert signed_out(at)
    at = view_as("chat", {"sparq_session": "not-a-token-the-server-issued"}).run()
    assert signed_out(at)


def test_sign_in_leaves_only_a_random_token_and_the_server_keeps_its_hash(ui_assistant):
    at = sign_in("alice", ALICE_PASSWORD)
    state = state_of(at)
    assert list(state) == ["sparq_session"]
    token = state["sparq_session"]
    assert len(token) >= 40 and "alice" not in token
    with ui_assistant.engine.connect() as conn:
        rows = conn.execute(text("SELECT token_hash, user_id, revoked FROM user_sessions")).all()
    assert [r[0] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert rows[0][1] == ui_assistant.users.get("alice").id and not rows[0][2]
    assert view_as("chat", state).run().title[0].value == "Ask sparq"


def test_sign_out_ends_the_session_for_every_copy_of_it(ui_assistant):
    at = sign_in("alice", ALICE_PASSWORD)
    copied = state_of(at)
    at.sidebar.button(key="sign_out").click().run()
    assert not at.exception
    assert signed_out(view_as("chat", copied).run())


def test_a_password_change_ends_the_users_other_sessions(ui_assistant):
    here = state_of(sign_in("alice", ALICE_PASSWORD))
    elsewhere = state_of(sign_in("alice", ALICE_PASSWORD))
    other_user = state_of(sign_in("mallory", "mallory-pass-1"))
    account = change_password(view_as("account", here).run(), ALICE_PASSWORD, "a-brand-new-pass-9")
    assert any("Password changed" in s.value for s in account.success)
    assert signed_out(view_as("chat", elsewhere).run())  # a thief's copy, say
    assert view_as("chat", here).run().title[0].value == "Ask sparq"  # the browser that changed it stays
    assert view_as("chat", other_user).run().title[0].value == "Ask sparq"
    assert ui_assistant.users.authenticate("alice", "a-brand-new-pass-9") is not None


def test_an_idle_session_ends(ui_assistant):
    idle_s = 8.0  # longer than a page run takes on a busy machine
    ui_assistant.settings = ui_assistant.settings.model_copy(update={"session_idle_minutes": idle_s / 60})
    state = state_of(sign_in("alice", ALICE_PASSWORD))
    chat = view_as("chat", state).run()
    assert chat.title[0].value == "Ask sparq"
    time.sleep(idle_s + 1)
    chat.run()
    assert signed_out(chat)


def test_a_session_ends_at_its_absolute_expiry_however_active(ui_assistant):
    from retrieval.schema import utcnow

    users, start = ui_assistant.users, utcnow()
    token = users.start_session("alice", lifetime_s=3600, now=start)
    for minutes in range(0, 60, 10):  # active every 10 minutes: never idle
        assert users.session_user(token, idle_s=900, now=start + timedelta(minutes=minutes)).name == "alice"
    assert users.session_user(token, idle_s=900, now=start + timedelta(minutes=61)) is None
    assert users.session_user(token, idle_s=900, now=start + timedelta(minutes=1)) is None  # ended for good
    assert users.live_sessions("alice", now=start) == 0


def test_wrong_passwords_from_one_address_do_not_lock_out_another(ui_assistant, address):
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    at.text_input(key="signin_name").input("admin")
    for _ in range(LIMIT):
        at.text_input(key="signin_password").input("guessing-wrong")
        at.button[0].click().run()
        assert [e.value for e in at.error] == ["Wrong user name or password."]
    at.text_input(key="signin_password").input(ADMIN_PASSWORD)
    at.button[0].click().run()
    assert at.error and at.error[0].value.startswith("Too many failed sign-ins")  # A: refused, even right
    assert not state_of(at)

    address(ADDRESS_B)  # the real admin, at their own desk
    at.button[0].click().run()
    assert not at.error and state_of(at)
    assert at.title[0].value == "Ask sparq"


def test_one_address_trying_many_names_is_stopped(ui_assistant):
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    refused_at = None
    for i in range(30):
        at.text_input(key="signin_name").input(f"guess{i}")
        at.text_input(key="signin_password").input("Winter2026!")
        at.button[0].click().run()
        if at.error and at.error[0].value.startswith("Too many failed sign-ins"):
            refused_at = i
            break
    assert refused_at is not None and refused_at <= 20


def test_the_throttle_lives_in_the_database_shared_by_replicas(ui_assistant, address):
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    at.text_input(key="signin_name").input("alice")
    for _ in range(LIMIT):
        at.text_input(key="signin_password").input("guessing-wrong")
        at.button[0].click().run()
    replica = make_engine(ui_assistant.settings.resolved_database_url)  # another server process's pool
    try:
        assert "signin_failures" in inspect(replica).get_table_names()
        from app.models import SigninFailure
        from app.users import SigninThrottle, TooManyAttempts

        with replica.connect() as conn:
            keys = list(conn.scalars(select(SigninFailure.key)))
        assert len(keys) == 2 * LIMIT and not any("alice" in k or ADDRESS_A in k for k in keys)  # hashed
        other = SigninThrottle(replica)
        with pytest.raises(TooManyAttempts):
            other.check(ADDRESS_A, "alice")
        other.check(ADDRESS_B, "alice")  # no exception: another address is not refused
        other.check(ADDRESS_A, "admin")
    finally:
        replica.dispose()


def test_failures_are_pruned_by_age_and_capped(ui_assistant):
    from app.users import SigninThrottle, TooManyAttempts
    from retrieval.schema import utcnow

    throttle = SigninThrottle(ui_assistant.engine, per_name=3, window_s=60, max_rows=10)
    start = utcnow()
    for _ in range(3):
        throttle.failed(ADDRESS_A, "alice", now=start)
    with pytest.raises(TooManyAttempts):
        throttle.check(ADDRESS_A, "alice", now=start + timedelta(seconds=30))
    assert throttle.rows() == 6
    later = start + timedelta(seconds=61)
    throttle.check(ADDRESS_A, "alice", now=later)  # the window has passed
    throttle.failed(ADDRESS_B, "bob", now=later)
    assert throttle.rows() == 2  # the old rows are gone
    for i in range(20):  # a flood from many addresses
        throttle.failed(f"10.0.0.{i}", "x", now=later)
    assert throttle.rows() == 10


def test_failed_sign_ins_log_the_address_and_a_count_never_the_typed_name(ui_assistant, address, caplog):
    caplog.set_level(logging.INFO)
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    for typed_name, typed_password in (
        ("Tr0ub4dor&3-typed-as-name", "x-password-1"),
        ("alice", "y-password-2"),
    ):
        at.text_input(key="signin_name").input(typed_name)
        at.text_input(key="signin_password").input(typed_password)
        at.button[0].click().run()
        assert at.error[0].value == "Wrong user name or password."
    messages = [r.getMessage() for r in caplog.records]
    failures = [m for m in messages if "failed sign-in" in m]
    for secret in ("Tr0ub4dor", "x-password-1", "y-password-2"):
        assert not any(secret in m for m in messages), messages
    assert not any("alice" in m for m in failures), failures
    assert len(failures) == 2 and all(ADDRESS_A in m for m in failures)
    assert "(2 in the last" in failures[-1]


def test_the_account_pages_password_check_is_throttled(ui_assistant, address):
    at = view_as("account", state_of(sign_in("alice", ALICE_PASSWORD))).run()
    for _ in range(LIMIT):
        change_password(at, "not-my-password", "a-brand-new-pass-9")
        assert [e.value for e in at.error] == ["The current password is wrong."]
    change_password(at, ALICE_PASSWORD, "a-brand-new-pass-9")
    assert at.error and at.error[0].value.startswith("Too many failed sign-ins")
    assert ui_assistant.users.authenticate("alice", ALICE_PASSWORD) is not None  # unchanged


def test_a_generated_admin_password_must_be_changed_before_anything_else(assistant, monkeypatch):
    monkeypatch.delenv("SPARQ_ADMIN_PASSWORD", raising=False)
    assert ensure_admin(assistant.users, assistant.settings.data_dir, announce=lambda _text: None) == "admin"
    generated = (assistant.settings.data_dir / ADMIN_PASSWORD_FILE).read_text().strip()
    use_assistant(assistant)
    try:
        at = sign_in("admin", generated)
        state = state_of(at)
        assert state and at.title[0].value != "Ask sparq"
        assert any("Change the generated password" in w.value for w in at.warning)
        for view in ("chat", "ingest", "documents"):
            blocked = view_as(view, state).run()
            assert not blocked.exception
            assert not blocked.title and not blocked.chat_input and not blocked.dataframe
            assert any("Change the generated password" in w.value for w in blocked.warning)
        account = change_password(view_as("account", state).run(), generated, "chosen-by-the-admin-1")
        assert any("Password changed" in s.value for s in account.success)
        chat = view_as("chat", state).run()
        assert chat.title[0].value == "Ask sparq" and chat.chat_input
    finally:
        use_assistant(None)


def test_an_admin_password_given_by_the_operator_need_not_be_changed(ui_assistant):
    at = sign_in("admin", ADMIN_PASSWORD)
    assert at.title[0].value == "Ask sparq" and not at.warning


def test_settings_never_print_the_api_key_or_the_database_password(monkeypatch, tmp_path, caplog):
    monkeypatch.chdir(tmp_path)
    url = "postgresql+psycopg://sparq:db-PASSWORD-42@db.internal:5432/sparq"
    settings = Settings(llm_api_key="sk-live-APIKEY-42", database_url=url)
    monkeypatch.setenv("SPARQ_LLM_API_KEY", "sk-env-APIKEY-43")
    monkeypatch.setenv("SPARQ_DATABASE_URL", url)
    from_env = Settings()
    caplog.set_level(logging.INFO)
    logging.getLogger("sparq.test").info("settings: %s / %r", settings, from_env)
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(from_env), caplog.text]
    for secret in ("APIKEY", "db-PASSWORD-42"):
        assert not any(secret in s for s in shown), secret
    assert settings.resolved_database_url == url == from_env.resolved_database_url  # the real one, to connect
    assert settings.llm_api_key.get_secret_value() == "sk-live-APIKEY-42"
    assert from_env.llm_api_key.get_secret_value() == "sk-env-APIKEY-43"
