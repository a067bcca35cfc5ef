"""Sign-in and role checks through the real entry page (the first admin: test_bootstrap.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete
from streamlit.testing.v1 import AppTest

from app.models import SigninFailure
from app.ui import session
from app.ui.signin_throttle import MAX_FAILURES
from tests.ui.conftest import ADMIN_PASSWORD, ALICE_PASSWORD, page

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "ui" / "main.py")


def test_sign_in_page_signs_in_and_refuses_wrong_password(ui_assistant):
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "sparq" and not at.sidebar.button  # nothing but the sign-in form
    at.text_input(key="signin_name").input("admin")
    at.text_input(key="signin_password").input("wrong-password")
    at.button[0].click().run()
    assert "Wrong user name or password." in [e.value for e in at.error]
    assert session.TOKEN_KEY not in at.session_state

    at.text_input(key="signin_password").input(ADMIN_PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert ui_assistant.users.session_user(at.session_state[session.TOKEN_KEY], idle_s=60).name == "admin"
    assert at.title[0].value == "Ask sparq"  # the default page after sign-in
    assert any("Signed in as **admin** (admin)" in c.value for c in at.sidebar.caption)


def test_employees_are_offered_no_admin_page():
    from app.ui.main import pages_for
    from app.users import UserInfo

    employee = UserInfo(1, "alice", "employee", ["staff"])
    admin = UserInfo(2, "root", "admin", [])
    assert [p.url_path for p in pages_for(employee)] == ["chat", "account"]
    assert {"ingest", "documents", "costs", "model"} <= {p.url_path for p in pages_for(admin)}
    assert pages_for(None) == []


@pytest.mark.parametrize("view", ["ingest", "documents", "costs", "model"])
def test_admin_pages_refuse_employees_and_anonymous_visitors(ui_assistant, view):
    at = page(view, "alice").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["This page is for administrators."]
    assert not at.title and not at.dataframe and not at.button
    at = page(view, None).run()
    assert [e.value for e in at.error] == ["Please sign in."]


def test_removed_user_is_signed_out(ui_assistant):
    at = page("chat", "alice")
    ui_assistant.users.remove("alice")
    at.run()
    assert [e.value for e in at.error] == ["Please sign in."]
    assert session.TOKEN_KEY not in at.session_state


# Upload names: tests/app/test_uploads.py (the helpers live in app.uploads).


def test_repeated_wrong_passwords_lock_the_name_for_a_while(ui_assistant):
    at = AppTest.from_file(ENTRY, default_timeout=120).run()
    at.text_input(key="signin_name").input("alice")
    for _ in range(MAX_FAILURES):
        at.text_input(key="signin_password").input("wrong-password")
        at.button[0].click().run()
        assert at.error[0].value == "Wrong user name or password."
    at.text_input(key="signin_password").input(ALICE_PASSWORD)  # even the right one, for now
    at.button[0].click().run()
    assert at.error[0].value.startswith("Too many failed sign-ins")
    assert session.TOKEN_KEY not in at.session_state
    with ui_assistant.engine.begin() as conn:  # the window passes
        conn.execute(delete(SigninFailure))
    at.button[0].click().run()
    assert ui_assistant.users.session_user(at.session_state[session.TOKEN_KEY], idle_s=60).name == "alice"
