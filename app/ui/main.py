"""Entry file of the web app (`sparq ui`, or `streamlit run app/ui/main.py`): sign-in, then the pages the
signed-in user's role allows. Admin pages are not even offered to employees, and each one checks again."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Streamlit: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st

from app.assistant import Assistant
from app.source_schedule import UI_SCHEDULE_ENV, SourceSchedule
from app.sources import service_for
from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.format import literal_markdown
from app.ui.views import account, chat, costs, documents, feedback, ingest, model
from app.users import TooManyAttempts, UserInfo


@dataclass(frozen=True)
class PageSpec:
    """One page of the app: what it is called, where it lives and whether only admins see it."""

    title: str
    render: Callable[[], None]
    url_path: str
    icon: str
    admin_only: bool


PAGES = [
    PageSpec("Chat", chat.render, "chat", ":material/chat:", False),
    PageSpec("Ingest", ingest.render, "ingest", ":material/upload_file:", True),
    PageSpec("Documents", documents.render, "documents", ":material/folder:", True),
    PageSpec("Costs", costs.render, "costs", ":material/payments:", True),
    PageSpec("Feedback", feedback.render, "feedback", ":material/thumbs_up_down:", True),
    PageSpec("Model", model.render, "model", ":material/memory:", True),
    PageSpec("Account", account.render, "account", ":material/person:", False),
]


def pages_for(user: UserInfo | None) -> list[PageSpec]:
    """The pages a user may open: none before sign-in, only Account while a generated password must be
    changed, everything but admin pages for employees."""
    if user is None:
        return []
    if user.must_change_password:
        return [p for p in PAGES if p.url_path == "account"]
    return [p for p in PAGES if user.is_admin or not p.admin_only]


def sign_in_page() -> None:
    """Sign in with single sign-on or a sparq password, as the settings allow."""
    settings = get_assistant().settings
    st.title("sparq")
    st.caption("Answers from your company's documents, on your own hardware.")
    error = session.signin_error()
    if error:  # a refused single sign-on: say why; no session was started
        st.error(f"Sign-in refused. {error}")
    if settings.oidc_enabled and st.button("Sign in with single sign-on", type="primary", key="sso_sign_in"):
        st.session_state.pop(session.SIGNIN_ERROR_KEY, None)
        st.login()
    if not settings.local_login:
        return
    if settings.oidc_enabled:
        st.caption("Or with a sparq password:")
    with st.form("sign_in"):
        name = st.text_input("User name", key="signin_name")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            user = session.sign_in(name, password)
        except (TooManyAttempts, session.LocalSignInDisabled) as exc:
            st.error(str(exc))
            return
        if user is None:
            st.error("Wrong user name or password.")
        else:
            st.rerun()


@st.cache_resource(show_spinner=False)
def start_source_schedule(_assistant: Assistant) -> SourceSchedule | None:
    """One source scheduler per web-app server that `sparq ui` started, from its first page view (Streamlit
    runs no code before one) until the process exits; none with SPARQ_SOURCE_SCHEDULE=false."""
    settings = _assistant.settings
    if os.environ.get(UI_SCHEDULE_ENV) != "1" or not settings.source_schedule:
        return None
    schedule = SourceSchedule(service_for(_assistant), poll_s=settings.source_poll_seconds).start()
    atexit.register(schedule.stop)
    return schedule


def main() -> None:
    """The app's entry point: sign-in, then the pages the user's role allows (admin pages hidden)."""
    st.set_page_config(page_title="sparq", page_icon=":material/chat:", layout="wide")
    # First run: creates the admin and says how to sign in, on the server console; starts the source scheduler.
    start_source_schedule(get_assistant())
    user = session.current_user()
    if user is None:
        user = session.sign_in_with_provider()  # back from the identity provider (or still signed in there)
    if user is None:
        st.navigation([st.Page(sign_in_page, title="Sign in", url_path="signin")], position="hidden").run()
        return
    specs = pages_for(user)
    if user.must_change_password:
        st.warning(session.PASSWORD_CHANGE_FIRST)
    nav = st.navigation(
        [
            st.Page(p.render, title=p.title, url_path=p.url_path, icon=p.icon, default=(i == 0))
            for i, p in enumerate(specs)
        ]
    )
    with st.sidebar:
        st.caption(f"Signed in as **{literal_markdown(user.name)}** ({user.role})")
        if st.button("Sign out", key="sign_out") and not session.sign_out():
            st.rerun()  # (after single sign-on, sign_out sends the browser to the provider's sign-out instead)
    nav.run()


main()
