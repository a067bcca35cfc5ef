"""Single sign-on end to end in a real browser: a real OpenID Connect provider (oidc-provider on Node.js,
tests/app/oidc_server.py) and `sparq ui` with SPARQ_OIDC_* and SPARQ_LOCAL_LOGIN=false; headless Chromium
signs in at the provider's own login page as an `hr` user, asks, and gets only `hr` passages; the user's
groups change at the provider, a new sign-in follows them; an altered ID token and one for another
audience are refused with a clear page and no session. Screenshots land in test-output/ui/oidc-*.png.

Needs Node.js and npm (the provider), and what tests/ui/test_browser.py needs (Chromium, chromedriver,
selenium, the SmolLM2 weights)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.oidc import REASONS
from tests.app.oidc_server import ADMIN_GROUP, CLIENT_ID, CLIENT_SECRET, OidcProvider, run_oidc_provider
from tests.ui.test_browser import (  # noqa: F401 - `browser` is a fixture
    ANSWER_S,
    CHROMEDRIVER,
    CHROMIUM,
    ROOT,
    STARTUP_S,
    Page,
    _free_port,
    _sparq,
    browser,
    browser_prerequisites,
    running_ui,
)

pytestmark = pytest.mark.integration

HR_TEXT = "The orchid bonus pool is three percent of salaries, paid every March."
ENG_TEXT = "The staging cluster is rebuilt every Tuesday night by the platform team."
QUESTION = "How large is the orchid bonus pool?"


@pytest.fixture
def sso_server(tmp_path: Path, embedder) -> Iterator[tuple[str, OidcProvider, Path, Path]]:
    model = browser_prerequisites()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    provider_run = run_oidc_provider(tmp_path / "oidc", f"{base}/oauth2callback")
    provider = next(provider_run)
    data = tmp_path / "data"
    _ingest(tmp_path, data, embedder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARQ_")}
    env.update(
        SPARQ_DATA_DIR=str(data),
        SPARQ_LLM_MODEL=str(model),
        SPARQ_LLM_CONTEXT_WINDOW="2048",
        SPARQ_MAX_ANSWER_TOKENS="16",
        SPARQ_ADMIN_PASSWORD="unused-admin-pass",
        SPARQ_OIDC_ISSUER=provider.issuer,
        SPARQ_OIDC_CLIENT_ID=CLIENT_ID,
        SPARQ_OIDC_CLIENT_SECRET=CLIENT_SECRET,
        SPARQ_OIDC_REDIRECT_URL=f"{base}/oauth2callback",
        SPARQ_OIDC_ADMIN_GROUPS=ADMIN_GROUP,
        SPARQ_LOCAL_LOGIN="false",
    )
    log_path = tmp_path / "server.log"
    try:
        with running_ui(env, port, log_path):
            yield base, provider, data, log_path
    finally:
        provider_run.close()


def _ingest(tmp_path: Path, data: Path, embedder) -> None:
    """Two collections, one readable by `hr`, one by `eng`, stored where the server will read them."""
    from app.assistant import Assistant
    from app.config import Settings

    for name, text in (("hr", HR_TEXT), ("eng", ENG_TEXT)):
        folder = tmp_path / f"docs-{name}"
        folder.mkdir()
        (folder / f"{name}.md").write_text(f"# {name.upper()} notes\n\n{text}\n")
    data.mkdir(parents=True, exist_ok=True)
    with Assistant(Settings(data_dir=data, database_url=f"sqlite:///{data / 'sparq.db'}")) as assistant:
        assistant._embedder = embedder
        assistant.ingest(tmp_path / "docs-hr", collection="people", groups=["hr"])
        assistant.ingest(tmp_path / "docs-eng", collection="platform", groups=["eng"])


def _rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of the server's own SQLite database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{data / 'sparq.db'}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _passages_shown_to(data: Path, user: str) -> list[str]:
    """The passages retrieved for the user's latest answer, as the server saved them with the conversation."""
    import json

    rows = _rows(
        data,
        "SELECT m.details FROM conversation_messages m JOIN conversations c "
        f"ON c.id = m.conversation_id WHERE c.user_name = '{user}' AND m.role = 'assistant' "
        "ORDER BY m.id DESC LIMIT 1",
    )
    details = rows[0][0]
    details = json.loads(details) if isinstance(details, str) else details
    return [p["text"] for p in details.get("passages", [])]


def _live_sessions(data: Path, user: str) -> int:
    return len(
        _rows(
            data,
            "SELECT s.id FROM user_sessions s JOIN users u ON u.id = s.user_id "
            f"WHERE u.name = '{user}' AND s.revoked = 0",
        )
    )


def _body_text(driver) -> str:
    """The page's text read by script, holding no element reference: during the redirects between sparq and
    the provider an element found a moment ago may belong to the previous document, and Chromium then
    answers a generic inspector error ("Node with given id does not belong to the document") rather than a
    stale-element one."""
    return driver.execute_script("return document.body ? document.body.innerText : '';") or ""


def _navigating() -> tuple[type[Exception], ...]:
    """What a poll across page loads may meet while the document is replaced under it."""
    from selenium.common.exceptions import WebDriverException

    return (WebDriverException,)


def _until_text(page: Page, needle: str, timeout: float = STARTUP_S) -> None:
    """Page.until_text across page loads."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page.d, timeout, poll_frequency=0.5, ignored_exceptions=_navigating()).until(
        lambda d: needle in _body_text(d), message=f"{needle!r} never appeared"
    )
    page.settle()


def _sign_in_at_provider(page: Page, base: str, user: str, *, expect: str = "Ask sparq") -> None:
    """Click single sign-on, type the user at the provider's own login page (unless its session is still
    open, when it answers at once), and wait for `expect` back in sparq."""
    from selenium.webdriver.support.ui import WebDriverWait

    page.d.get(base)
    _until_text(page, "Sign in with single sign-on")
    page.click_button("Sign in with single sign-on")
    WebDriverWait(page.d, 60, poll_frequency=0.3, ignored_exceptions=_navigating()).until(
        lambda d: d.find_elements("css selector", 'input[name="login"]') or expect in _body_text(d),
        message="neither the provider's login page nor sparq came back",
    )
    if page.d.find_elements("css selector", 'input[name="login"]'):
        page.d.find_element("css selector", 'input[name="login"]').send_keys(user)
        page.d.find_element("css selector", 'input[name="password"]').send_keys("any password")
        page.d.find_element("css selector", 'button[type="submit"]').click()
    _until_text(page, expect)


def _sign_out(page: Page, base: str) -> None:
    """sparq's Sign out, then the provider's sign-out confirmation, back to sparq's sign-in page."""
    from selenium.webdriver.support.ui import WebDriverWait

    page.click_button("Sign out")
    wait = WebDriverWait(page.d, 60, poll_frequency=0.3, ignored_exceptions=_navigating())
    wait.until(lambda d: not d.current_url.startswith(base), message="the provider's sign-out never came")
    confirm = wait.until(
        lambda d: next(iter(d.find_elements("xpath", '//button[@value="yes"]')), False),
        message="the provider's sign-out confirmation never came",
    )
    confirm.click()
    _until_text(page, "Sign in with single sign-on")


def _ask(page: Page, question: str, data: Path, user: str) -> None:
    """Ask in the chat and wait for the answer on screen and its saved turn (the page shows the answer's
    cost line before the turn is written, and a later check reads the saved turn)."""
    from selenium.webdriver.common.keys import Keys

    query = (
        "SELECT count(*) FROM conversation_messages m JOIN conversations c ON c.id = m.conversation_id "
        f"WHERE c.user_name = '{user}' AND m.role = 'assistant'"
    )
    before = _rows(data, query)[0][0]
    box = page.wait().until(lambda d: d.find_element("css selector", '[data-testid="stChatInputTextArea"]'))
    box.send_keys(question, Keys.ENTER)
    page.until_text(" tokens · ", ANSWER_S)
    deadline = time.monotonic() + ANSWER_S
    while _rows(data, query)[0][0] <= before:
        assert time.monotonic() < deadline, "the answer was shown but its turn was never saved"
        time.sleep(0.2)


def test_single_sign_on_access_follows_the_provider_and_bad_tokens_are_refused(sso_server, browser):  # noqa: F811
    base, provider, data, log_path = sso_server
    page = Page(browser, base)
    browser.get(base)
    page.until_text("Sign in with single sign-on", STARTUP_S)
    assert not browser.find_elements(
        "css selector", 'input[aria-label="User name"]'
    )  # SPARQ_LOCAL_LOGIN=false
    page.shot("oidc-01-sign-in")

    # alice is in hr at the provider: she sees hr passages, never eng ones.
    _sign_in_at_provider(page, base, "alice")
    assert page.nav_titles() == ["Chat", "Account"]
    _ask(page, QUESTION, data, "alice")
    passages = _passages_shown_to(data, "alice")
    assert passages and all(HR_TEXT in p for p in passages), passages
    assert ENG_TEXT not in page.text()
    page.shot("oidc-02-hr-answer")
    assert _rows(data, "SELECT source, groups, role FROM users WHERE name = 'alice'") == [
        ("oidc", '["hr"]', "employee")
    ]
    assert _live_sessions(data, "alice") == 1

    # Sign-out ends the sparq session and Streamlit's, and signs out at the provider.
    _sign_out(page, base)
    assert _live_sessions(data, "alice") == 0
    assert not any(c["name"].startswith("_streamlit_user") for c in browser.get_cookies())

    # The directory moves alice from hr to eng: her next sign-in follows it.
    provider.set_groups("alice", ["eng"])
    _sign_in_at_provider(page, base, "alice")
    _ask(page, QUESTION, data, "alice")
    passages = _passages_shown_to(data, "alice")
    assert not any(HR_TEXT in p for p in passages), passages
    assert HR_TEXT not in page.text()
    page.shot("oidc-03-after-group-change")
    assert _rows(data, "SELECT groups FROM users WHERE name = 'alice'") == [('["eng"]',)]
    _sign_out(page, base)

    # An ID token altered on its way (every group granted) and one issued for another client: refused.
    for mode, reason in (("tamper", "signature"), ("audience", "audience")):
        provider.proxy.mode = mode
        _sign_in_at_provider(page, base, "alice", expect="Sign-in refused")
        assert REASONS[reason] in page.text(), page.text()
        assert "Ask sparq" not in page.text() and _live_sessions(data, "alice") == 0
        page.shot(f"oidc-04-refused-{mode}")
    assert provider.proxy.rewritten >= 2
    assert _rows(data, "SELECT groups, role FROM users WHERE name = 'alice'") == [('["eng"]', "employee")]
    server_log = log_path.read_text(errors="replace")
    assert "single sign-on refused at the callback (signature)" in server_log
    assert CLIENT_SECRET not in server_log
