"""End to end in a real browser: `sparq ui` serves the app, headless Chromium signs in, ingests a folder,
asks a question and sees the cited answer; a screenshot of every page lands in test-output/ui/.

Needs the Debian packages `chromium` and `chromium-driver` and the `selenium` Python package."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import stop_process
from tests.ui.conftest import ADMIN_PASSWORD, ALICE_PASSWORD, DOCS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
STARTUP_S = 180
ANSWER_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sparq() -> list[str]:
    script = Path(sys.executable).with_name("sparq")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from app.cli import main; main()"]


def browser_prerequisites() -> Path:
    """Skip unless Chromium, its driver, selenium, llama-cpp-python and the shipped SmolLM2 are installed;
    the SmolLM2 weights' path (the small model the served app answers with)."""
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from model.moe.source_weights import smollm2_path

    try:
        return smollm2_path()
    except Exception as exc:
        pytest.skip(f"SmolLM2 weights not installed: {exc}")


@contextlib.contextmanager
def running_ui(env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """`sparq ui` on 127.0.0.1:`port` until the block ends (its base URL); fails with the server's log if it
    does not answer its health check within STARTUP_S."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_sparq(), "ui", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=5) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sparq ui did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        yield base
    finally:
        stop_process(proc, 20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    model = browser_prerequisites()
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARQ_")}
    env.update(
        SPARQ_DATA_DIR=str(tmp_path / "data"),
        SPARQ_LLM_MODEL=str(model),
        SPARQ_LLM_CONTEXT_WINDOW="2048",
        SPARQ_MAX_ANSWER_TOKENS="24",
        SPARQ_ADMIN_PASSWORD=ADMIN_PASSWORD,
        SPARQ_NEW_USER_PASSWORD=ALICE_PASSWORD,
        SPARQ_INGEST_ROOTS=str(docs),  # the one server folder the admin may ingest from
    )
    subprocess.run(
        [*_sparq(), "users", "add", "alice", "--groups", "staff"], env=env, cwd=ROOT, check=True, timeout=120
    )
    log_path = tmp_path / "server.log"
    with running_ui(env, port, log_path) as base:
        yield base, docs, log_path


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:  # keep what the browser showed, for the person debugging
            OUT.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(OUT / "failure.png"))
            (OUT / "failure.txt").write_text(driver.find_element("tag name", "body").text)
    finally:
        driver.quit()


class Page:
    """Small helpers over Streamlit's DOM (data-testid attributes and aria labels)."""

    def __init__(self, driver, base: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base = driver, base
        self.wait = lambda timeout=60: WebDriverWait(driver, timeout, poll_frequency=0.5)

    def text(self) -> str:
        return self.d.find_element("tag name", "body").text

    def until_text(self, needle: str, timeout: float = 60) -> None:
        self.wait(timeout).until(
            lambda d: needle in d.find_element("tag name", "body").text, message=f"{needle!r} never appeared"
        )
        self.settle()

    def settle(self, timeout: float = 120) -> None:
        """Wait until Streamlit is not running the script any more (its status widget disappears)."""
        time.sleep(0.5)
        self.wait(timeout).until(
            lambda d: not d.find_elements("css selector", '[data-testid="stStatusWidget"]'),
            message="the app kept running",
        )

    def type_into(self, label: str, value: str) -> None:
        from selenium.webdriver.common.keys import Keys

        selector = f'input[aria-label="{label}"]'
        box = self.wait().until(
            lambda d: next((b for b in d.find_elements("css selector", selector) if b.is_displayed()), False),
            message=f"no visible input {label!r}",
        )
        box.clear()
        box.send_keys(value, Keys.TAB)
        self.settle()

    def click_button(self, text: str) -> None:
        xpath = f'//button[normalize-space(.)="{text}"]'
        self.wait().until(lambda d: d.find_element("xpath", xpath).is_enabled())
        self.d.find_element("xpath", xpath).click()

    def nav(self, title: str) -> None:
        link = self.d.find_element(
            "xpath", f'//*[@data-testid="stSidebarNav"]//a[.//span[normalize-space(.)="{title}"]]'
        )
        link.click()
        self.settle()

    def nav_titles(self) -> list[str]:
        return [
            a.text.strip().splitlines()[-1]
            for a in self.d.find_elements("css selector", '[data-testid="stSidebarNav"] a')
        ]

    def shot(self, name: str) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        self.settle()
        height = self.d.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
            "return Math.max(m.scrollHeight, document.body.scrollHeight);"
        )
        self.d.set_window_size(1400, min(max(1000, int(height) + 150), 4000))
        time.sleep(0.5)
        self.d.save_screenshot(str(OUT / f"{name}.png"))
        self.d.set_window_size(1400, 1000)

    def sign_in(self, name: str, password: str) -> None:
        self.d.get(self.base)
        self.until_text("Sign in", STARTUP_S)
        self.type_into("User name", name)
        self.type_into("Password", password)
        self.click_button("Sign in")
        self.until_text("Ask sparq", STARTUP_S)


def test_sign_in_ingest_ask_and_see_the_cited_answer(server, browser):
    from selenium.webdriver.common.keys import Keys

    base, docs, log_path = server
    page = Page(browser, base)
    browser.get(base)
    page.until_text("Sign in", STARTUP_S)
    page.shot("01-sign-in")
    assert "Ingest" not in page.text()  # nothing but the form before sign-in

    page.sign_in("admin", ADMIN_PASSWORD)
    assert {"Chat", "Ingest", "Documents", "Costs", "Model", "Account"} <= set(page.nav_titles())

    page.nav("Ingest")
    page.until_text("Ingest documents")
    page.type_into("New collection name", "handbook")
    page.type_into("Groups that may read these documents (comma-separated)", "staff")
    browser.find_element("xpath", '//label[.//p[normalize-space(.)="Server folder"]]').click()
    page.settle()
    page.type_into("Folder or file on the server", str(docs))
    page.click_button("Ingest folder")
    page.until_text("2 new", STARTUP_S)
    page.shot("02-ingest")

    page.nav("Documents")
    page.until_text("2 of 2 documents")
    page.shot("03-documents")

    page.nav("Chat")
    box = page.wait().until(lambda d: d.find_element("css selector", '[data-testid="stChatInputTextArea"]'))
    box.send_keys("How much are meals reimbursed per day?", Keys.ENTER)
    page.until_text(" tokens · ", ANSWER_S)  # the cost line under the finished answer
    body = page.text()
    assert "How much are meals reimbursed per day?" in body
    summaries = browser.find_elements("css selector", '[data-testid="stExpander"] summary')
    sources = [s for s in summaries if s.text.strip().splitlines()[-1].startswith("[")]  # after the icon
    if sources:  # cited (or, when the small model cites nothing, retrieved) passages: open the first
        assert any("Travel policy" in s.text for s in sources), [s.text for s in sources]
        sources[0].click()
        page.until_text("40 euros")
        assert browser.find_elements("xpath", '//button[normalize-space(.)="Download source"]')
    else:
        assert "Not in the documents." in body
    page.shot("04-chat-answer")

    page.nav("Costs")
    page.until_text("Most expensive queries")
    assert len(browser.find_elements("css selector", '[data-testid="stVegaLiteChart"]')) >= 5
    page.shot("05-costs")

    page.nav("Model")
    page.until_text("Default model build")
    page.shot("06-model")

    page.nav("Account")
    page.until_text("Signed in as admin")
    page.shot("07-account")

    # An employee: no admin page is offered, and the conversation is hers alone.
    page.click_button("Sign out")
    page.until_text("Sign in")
    page.sign_in("alice", ALICE_PASSWORD)
    assert page.nav_titles() == ["Chat", "Account"]
    assert "How much are meals reimbursed" not in page.text()
    page.shot("08-employee-chat")

    # Saved conversations and feedback: alice asks, reloads the page, and finds her conversation again.
    box = page.wait().until(lambda d: d.find_element("css selector", '[data-testid="stChatInputTextArea"]'))
    box.send_keys("What is the VPN server?", Keys.ENTER)
    page.until_text(" tokens · ", ANSWER_S)
    browser.refresh()
    if "Ask sparq" not in page.text():
        page.until_text("Sign in", STARTUP_S)
        page.sign_in("alice", ALICE_PASSWORD)
    page.until_text("What is the VPN server?", STARTUP_S)  # restored from the database, not the browser
    page.until_text(" tokens · ", ANSWER_S)
    thumbs_down = page.wait().until(
        lambda d: d.find_element("xpath", '//button[contains(normalize-space(.), "thumb_down")]')
    )
    thumbs_down.click()
    page.settle()
    page.shot("09-conversation-after-reload")
    page.wait().until(lambda _d: _ratings(log_path.parent / "data"))
    assert _ratings(log_path.parent / "data") == [("alice", "down")]
    assert "Traceback" not in log_path.read_text(errors="replace")


def _ratings(data_dir: Path) -> list[tuple[str, str]]:
    """The feedback rows the server stored, read from its SQLite database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{data_dir / 'sparq.db'}")
    try:
        with engine.connect() as conn:
            return [
                tuple(r) for r in conn.execute(text("SELECT user_name, rating FROM feedback ORDER BY id"))
            ]
    finally:
        engine.dispose()
