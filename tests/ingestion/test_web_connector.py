"""The web connector against real HTTP servers on 127.0.0.1: a generated intranet site (pages at several
depths, robots.txt, a PDF, a sitemap, redirects) served with ETag / Last-Modified, every request logged,
and a second server on another port that the crawler must never reach."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ingestion.connectors.base import SourceConfigError, SourceUnavailable
from ingestion.connectors.registry import make_connector
from ingestion.connectors.web import WebConnector, extension_for, normalise_url
from tests.files import one_page_pdf

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".pdf": "application/pdf",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".zip": "application/zip",
}


@dataclass(frozen=True)
class Hit:
    path: str
    status: int
    headers: dict[str, str]


@dataclass
class Site:
    """What a test server serves (files under `root`) and how; every request is logged."""

    root: Path
    port: int = 0
    log: list[Hit] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    fail: dict[str, int] = field(default_factory=dict)  # path -> status answered instead
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds before answering
    no_etag: set[str] = field(default_factory=set)  # paths served with Last-Modified only
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def key(self, path: str) -> str:
        return normalise_url(self.url(path)) or ""

    def hits(self, path: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.log if path is None or h.path == path]

    def page_hits(self) -> list[Hit]:
        return [h for h in self.hits() if h.path != "/robots.txt"]

    def clear(self) -> None:
        with self.lock:
            self.log.clear()

    def write(self, path: str, content: str | bytes) -> Path:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_bytes(content)
        return target


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        site = self.server.site
        path = urlsplit(self.path).path
        status, body, headers = self._answer(site, path)
        with site.lock:  # logged before answering, so a test sees it as soon as the client has the answer
            site.log.append(Hit(path, status, {k.lower(): v for k, v in self.headers.items()}))
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the timeout test)

    def _answer(self, site: Site, path: str) -> tuple[int, bytes, dict[str, str]]:
        if path in site.slow:
            time.sleep(site.slow[path])
        if path in site.fail:
            return site.fail[path], f"error {site.fail[path]}".encode(), {}
        if path in site.redirects:
            return 302, b"", {"Location": site.redirects[path]}
        file = site.root / unquote(path).lstrip("/")
        if file.is_dir():
            file = file / "index.html"
        if not file.is_file():
            return 404, b"not found", {}
        body = file.read_bytes()
        mtime = int(file.stat().st_mtime)
        headers = {"Last-Modified": formatdate(mtime, usegmt=True)}
        etag = None
        if path not in site.no_etag:
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            headers["ETag"] = etag
        if_none_match = self.headers.get("If-None-Match")
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_none_match is not None:
            if etag is not None and if_none_match == etag:
                return 304, b"", headers
        elif (
            if_modified_since is not None
            and int(parsedate_to_datetime(if_modified_since).timestamp()) >= mtime
        ):
            return 304, b"", headers
        headers["Content-Type"] = _TYPES.get(file.suffix, "application/octet-stream")
        return 200, body, headers

    def log_message(self, format: str, *args: object) -> None:
        pass  # the Site keeps the log


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: Site) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site
        site.port = self.server_address[1]


@pytest.fixture
def serve() -> Iterator:
    """Starts a server for a Site in a thread; all are shut down at the end of the test."""
    servers: list[tuple[_Server, threading.Thread]] = []

    def start(site: Site) -> Site:
        server = _Server(site)
        thread = threading.Thread(target=server.serve_forever, name=f"http-{site.port}", daemon=True)
        thread.start()
        servers.append((server, thread))
        return site

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _page(title: str, text: str, *links: str, head: str = "") -> str:
    anchors = "\n".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (
        f"<!doctype html><html><head><title>{title}</title>{head}</head>"
        f"<body><h1>{title}</h1><p>{text}</p><ul>{anchors}</ul></body></html>"
    )


PDF_SENTENCE = "The quarterly safety manual requires orange helmets on level nine"
DEEP_SENTENCE = "Level three explains how the badge printer in room 3.14 is refilled with ribbons"

# Every page the default crawl (max_depth 3) takes, with its depth from /index.html.
DEPTHS = {
    "/index.html": 0,
    "/level1.html": 1,
    "/manual.pdf": 1,
    "/lm.html": 1,
    "/moved-here.html": 1,
    "/level2/page.html": 2,
    "/below-hidden.html": 2,
    "/level2/level3.html": 3,
}


@pytest.fixture
def other(serve, tmp_path: Path) -> Site:
    """Another host's server (another port): the crawler must never ask it anything."""
    site = Site(tmp_path / "other")
    site.write("/outside.html", _page("Outside", "not ours"))
    return serve(site)


@pytest.fixture
def site(serve, tmp_path: Path, other: Site) -> Site:
    s = serve(Site(tmp_path / "site"))
    s.write(
        "/index.html",
        _page(
            "Intranet home",
            "Welcome to the intranet.",
            "level1.html",
            "./level1.html#top",  # the same page again, spelled otherwise
            "manual.pdf",
            "private/secret.html",  # robots.txt disallows /private/ for sparq
            "/lm.html",
            "hidden.html",
            "/moved",  # a redirect on this site: followed
            "/go-away",  # a redirect to the other server: not followed
            other.url("/outside.html"),  # another port
            f"http://localhost:{s.port}/level1.html",  # the same server under another host name
            "archive.zip",  # a type no loader reads
            "mailto:help@example.org",
        ),
    )
    s.write("/level1.html", _page("Level one", "First level.", "level2/page.html", "/index.html"))
    s.write("/level2/page.html", _page("Level two", "Second level.", "level3.html", "../level1.html"))
    s.write("/level2/level3.html", _page("Level three", DEEP_SENTENCE, "/level4.html"))
    s.write("/level4.html", _page("Level four", "Too deep for max_depth 3."))
    s.write("/manual.pdf", one_page_pdf(PDF_SENTENCE))
    s.write("/lm.html", _page("Last-Modified only", "Served without an ETag."))
    s.write(
        "/hidden.html",
        _page(
            "Hidden", "Not for the index.", "below-hidden.html", head='<meta name="robots" content="noindex">'
        ),
    )
    s.write("/below-hidden.html", _page("Below hidden", "Found through a noindex page."))
    s.write("/moved-here.html", _page("Moved here", "The target of /moved."))
    s.write("/private/secret.html", _page("Secret", "robots.txt keeps crawlers out."))
    s.write("/orphan.html", _page("Orphan", "Linked from nowhere, listed in the sitemap."))
    s.write("/archive.zip", b"PK\x05\x06" + b"\0" * 18)
    s.write(
        "/robots.txt",
        "User-agent: sparq\nDisallow: /private/\n\nUser-agent: *\nDisallow: /\n",
    )
    s.write(
        "/sitemap.xml",
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{s.url('/index.html')}</loc></url>"
        f"<url><loc>{s.url('/orphan.html')}</loc></url>"
        f"<url><loc>{s.url('/private/secret.html')}</loc></url>"
        f"<url><loc>{other.url('/outside.html')}</loc></url>"
        "</urlset>",
    )
    s.no_etag.add("/lm.html")
    s.redirects["/moved"] = "/moved-here.html"
    s.redirects["/go-away"] = other.url("/outside.html")
    return s


def _keys(site: Site, paths) -> set[str]:
    return {site.key(p) for p in paths}


def _within(depth: int) -> set[str]:
    return {p for p, d in DEPTHS.items() if d <= depth}


def test_first_sync_finds_exactly_the_allowed_pages_within_the_limits(site: Site, other: Site) -> None:
    connector = WebConnector(start_url=site.url("/index.html"))
    changes = connector.changes(None)

    expected = _keys(site, DEPTHS)
    assert changes.present == expected
    assert {d.key for d in changes.documents} == expected
    assert connector.root_key == f"http://127.0.0.1:{site.port}/"
    assert all(k.startswith(connector.root_key) for k in changes.present)

    docs = {d.key: d for d in changes.documents}
    home = docs[site.key("/index.html")]
    assert (home.extension, home.title, home.mtime) == (".html", "Intranet home", 0)
    assert home.size == len((site.root / "index.html").read_bytes())
    pdf = docs[site.key("/manual.pdf")]
    assert pdf.extension == ".pdf"
    requests_before_fetch = len(site.hits())
    assert pdf.fetch() == (site.root / "manual.pdf").read_bytes()
    assert home.fetch() == (site.root / "index.html").read_bytes()
    assert len(site.hits()) == requests_before_fetch, "fetch() must not download again"

    assert not site.hits("/private/secret.html"), "robots.txt disallows /private/ for sparq"
    assert not site.hits("/level4.html"), "depth 4 is beyond max_depth 3"
    assert len(site.hits("/robots.txt")) == 1
    assert other.hits() == [], "another host must never be asked"
    assert not [h for h in site.hits() if h.headers.get("host", "").startswith("localhost")]
    assert len(site.hits("/level1.html")) == 1, "a fragment or ./ spelling is the same page"
    assert site.hits("/hidden.html"), "a noindex page is read for its links"
    assert site.key("/hidden.html") not in changes.present

    notes = "\n".join(changes.notes)
    assert "archive.zip" in notes and "application/zip" in notes
    assert "go-away" in notes and "another site" in notes
    assert "disallowed by robots.txt" in notes


def test_second_sync_asks_conditionally_and_reads_nothing(site: Site) -> None:
    connector = WebConnector(start_url=site.url("/index.html"))
    first = connector.changes(None)
    site.clear()

    second = connector.changes(first.cursor)

    assert second.documents == []
    assert second.present == first.present
    answered = {h.path: h.status for h in site.page_hits() if h.path != "/moved"}
    assert set(answered) == set(DEPTHS) | {"/hidden.html", "/archive.zip", "/go-away"}
    not_modified = {p for p, status in answered.items() if status == 304}
    assert not_modified == set(DEPTHS) | {"/hidden.html"}, (
        "pages below 304 pages are found by their stored links"
    )
    lm = site.hits("/lm.html")[0]
    assert "if-modified-since" in lm.headers and "if-none-match" not in lm.headers
    assert site.hits("/index.html")[0].headers["if-none-match"].startswith('"')
    # A redirect's target is asked with its own validators.
    assert site.hits("/moved-here.html")[0].status == 304


def test_an_edited_page_is_the_only_document(site: Site) -> None:
    connector = WebConnector(start_url=site.url("/index.html"))
    cursor = connector.changes(None).cursor

    site.write("/level2/page.html", _page("Level two, edited", "Changed.", "level3.html"))
    changes = connector.changes(cursor)
    assert [d.key for d in changes.documents] == [site.key("/level2/page.html")]
    assert changes.documents[0].title == "Level two, edited"
    assert changes.present == _keys(site, DEPTHS)

    # Last-Modified only: a newer modification time is a change too.
    lm = site.write("/lm.html", _page("Last-Modified only", "Edited, and one minute newer."))
    newer = time.time() + 60
    os.utime(lm, (newer, newer))
    again = connector.changes(changes.cursor)
    assert [d.key for d in again.documents] == [site.key("/lm.html")]
    assert again.documents[0].fetch() == lm.read_bytes()


def test_same_bytes_served_in_full_are_not_a_document(site: Site) -> None:
    connector = WebConnector(start_url=site.url("/index.html"))
    cursor = connector.changes(None).cursor
    site.no_etag.update(DEPTHS)  # no validators at all: every page comes back 200
    os.utime(site.root / "index.html", (time.time() + 60,) * 2)
    changes = connector.changes(cursor)
    assert site.hits("/index.html")[-1].status == 200
    assert changes.documents == []
    assert changes.present == _keys(site, DEPTHS)


def test_a_deleted_page_is_dropped_and_a_failing_one_kept(site: Site) -> None:
    connector = WebConnector(start_url=site.url("/index.html"), timeout_s=0.5)
    first = connector.changes(None)

    (site.root / "level2" / "level3.html").unlink()
    gone = connector.changes(first.cursor)
    assert gone.present == first.present - {site.key("/level2/level3.html")}
    assert gone.documents == []
    assert any("level3.html" in n and "404" in n for n in gone.notes)

    # A hub page failing (503) keeps itself and the pages only reachable through it.
    site.fail["/level1.html"] = 503
    site.slow["/lm.html"] = 2.0  # longer than timeout_s
    broken = connector.changes(gone.cursor)
    assert broken.present == gone.present
    assert broken.documents == []
    assert site.hits("/level2/page.html")[-1].status == 304
    notes = "\n".join(broken.notes)
    assert "level1.html answered HTTP 503" in notes and "kept as stored" in notes
    assert "lm.html could not be" in notes

    # Back to normal: the cursor kept the failing pages' entries.
    site.fail.clear()
    site.slow.clear()
    healed = connector.changes(broken.cursor)
    assert healed.present == gone.present
    assert healed.documents == []


def test_a_page_the_site_now_refuses_is_dropped(site: Site) -> None:
    """401/403: the intranet restricted the page; its old text must not stay searchable in sparq."""
    connector = WebConnector(start_url=site.url("/index.html"), timeout_s=5)
    first = connector.changes(None)
    for status in (403, 401):
        site.fail["/level1.html"] = status
        restricted = connector.changes(first.cursor)
        assert site.key("/level1.html") not in restricted.present
        assert site.key("/level1.html") in first.present


def test_depth_and_page_limits(site: Site) -> None:
    shallow = WebConnector(start_url=site.url("/index.html"), max_depth=1).changes(None)
    assert shallow.present == _keys(site, _within(1))
    assert not site.hits("/level2/page.html")

    site.clear()
    start_only = WebConnector(start_url=site.url("/index.html"), max_depth=0).changes(None)
    assert start_only.present == {site.key("/index.html")}
    assert [h.path for h in site.page_hits()] == ["/index.html"]

    site.clear()
    few = WebConnector(start_url=site.url("/index.html"), max_pages=3).changes(None)
    assert few.present == _keys(site, ["/index.html", "/level1.html", "/manual.pdf"])
    assert len({h.path for h in site.page_hits()}) == 3
    assert any("max_pages (3) reached" in n for n in few.notes)


def test_sitemap_adds_pages_and_can_be_the_only_entry(site: Site, other: Site) -> None:
    both = WebConnector(start_url=site.url("/index.html"), sitemap_url=site.url("/sitemap.xml")).changes(None)
    assert both.present == _keys(site, DEPTHS) | {site.key("/orphan.html")}
    assert any("outside" in n and "not followed" in n for n in both.notes)

    listed = WebConnector(sitemap_url=site.url("/sitemap.xml"), max_depth=0).changes(None)
    assert listed.present == _keys(site, ["/index.html", "/orphan.html"])
    assert other.hits() == []
    assert not site.hits("/private/secret.html")

    (site.root / "sitemap.xml").unlink()
    with pytest.raises(SourceUnavailable, match=r"sitemap .*404"):
        WebConnector(sitemap_url=site.url("/sitemap.xml")).changes(None)


def test_a_sitemap_index_and_a_gzipped_sitemap(site: Site) -> None:
    import gzip

    urlset = (
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{site.url('/orphan.html')}</loc></url></urlset>"
    )
    site.write("/maps/pages.xml.gz", gzip.compress(urlset.encode()))
    site.write(
        "/maps/index.xml",
        '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        "<sitemap><loc>pages.xml.gz</loc></sitemap></sitemapindex>",
    )
    changes = WebConnector(sitemap_url=site.url("/maps/index.xml"), max_depth=0).changes(None)
    assert changes.present == {site.key("/orphan.html")}

    site.write("/maps/evil.xml", '<!DOCTYPE x [<!ENTITY a "aaaa">]><urlset>&a;</urlset>')
    with pytest.raises(SourceUnavailable, match="DTD"):
        WebConnector(sitemap_url=site.url("/maps/evil.xml")).changes(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_site_down_raises_source_unavailable(site: Site) -> None:
    with pytest.raises(SourceUnavailable, match="could not be reached"):
        WebConnector(start_url=f"http://127.0.0.1:{_closed_port()}/").changes(None)

    site.fail["/index.html"] = 500
    with pytest.raises(SourceUnavailable, match=r"start URL .*index.html answered HTTP 500"):
        WebConnector(start_url=site.url("/index.html")).changes(None)
    site.fail.clear()

    site.clear()
    site.fail["/robots.txt"] = 503
    with pytest.raises(SourceUnavailable, match=r"robots.txt answered HTTP 503"):
        WebConnector(start_url=site.url("/index.html")).changes(None)
    assert not site.hits("/index.html"), "nothing is fetched while the rules are unknown"
    site.fail.clear()

    with pytest.raises(SourceUnavailable, match="disallows the start URL"):
        WebConnector(start_url=site.url("/private/secret.html")).changes(None)

    site.redirects["/to-private"] = "/private/secret.html"
    with pytest.raises(SourceUnavailable, match=r"redirects \(302\) to .*disallowed by robots.txt"):
        WebConnector(start_url=site.url("/to-private")).changes(None)
    assert not site.hits("/private/secret.html")

    (site.root / "index.html").unlink()
    with pytest.raises(SourceUnavailable, match="404"):
        WebConnector(start_url=site.url("/index.html")).changes(None)


def test_a_missing_robots_txt_allows_everything(site: Site) -> None:
    (site.root / "robots.txt").unlink()
    changes = WebConnector(start_url=site.url("/index.html")).changes(None)
    assert site.key("/private/secret.html") in changes.present
    assert site.hits("/robots.txt")[0].status == 404


def test_the_user_agent_picks_its_robots_rules(site: Site) -> None:
    with pytest.raises(SourceUnavailable, match="disallows the start URL"):
        WebConnector(start_url=site.url("/index.html"), user_agent="otherbot").changes(None)
    assert site.hits("/robots.txt")[0].headers["user-agent"] == "otherbot"


def test_meta_robots_nofollow_for_sparq_keeps_the_links_unfollowed(site: Site) -> None:
    site.write(
        "/nf.html",
        _page(
            "No follow", "Links not for sparq.", "orphan.html", head='<meta name="sparq" content="nofollow">'
        ),
    )
    changes = WebConnector(start_url=site.url("/nf.html"), user_agent="sparq/1.0").changes(None)
    assert changes.present == {site.key("/nf.html")}
    assert not site.hits("/orphan.html")


def test_an_unreadable_cursor_reads_everything_again(site: Site) -> None:
    changes = WebConnector(start_url=site.url("/index.html")).changes("{not json")
    assert {d.key for d in changes.documents} == _keys(site, DEPTHS)
    assert any("cursor is not JSON" in n for n in changes.notes)
    assert all("if-none-match" not in h.headers for h in site.hits())


def test_a_large_body_waits_on_disk_and_close_removes_it(site: Site) -> None:
    big = site.write("/big.txt", b"0123456789abcdef\n" * (300 * 1024))  # 5.1 MB, above the in-memory limit
    connector = WebConnector(start_url=site.url("/big.txt"))
    changes = connector.changes(None)
    (doc,) = changes.documents
    assert (doc.extension, doc.size) == (".txt", big.stat().st_size)
    spooled = [p for s in connector._spools for p in Path(s.name).iterdir()]
    assert len(spooled) == 1
    assert doc.fetch() == big.read_bytes()
    connector.close()
    assert not spooled[0].exists()

    with pytest.raises(SourceUnavailable, match="max_page_bytes"):
        WebConnector(start_url=site.url("/big.txt"), max_page_bytes=1024 * 1024).changes(None)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("HTTP://Intranet.EXAMPLE/a/../b/./c#frag", "http://intranet.example:80/b/c"),
        ("https://h", "https://h:443/"),
        ("http://h:8080/%7euser/%2fx%zz?q=a b", "http://h:8080/~user/%2Fx%25zz?q=a%20b"),
        ("http://user:pw@h/p", "http://h:80/p"),
        ("http://[::1]:81/p", "http://[::1]:81/p"),
        ("mailto:a@b.example", None),
        ("javascript:void(0)", None),
        ("ftp://h/file", None),
        ("http://h:port/", None),
    ],
)
def test_normalise_url(url: str, key: str | None) -> None:
    assert normalise_url(url) == key


def test_relative_links_resolve_against_the_page() -> None:
    assert normalise_url("../x.html#s", "http://h:80/a/b/c.html") == "http://h:80/a/x.html"


@pytest.mark.parametrize(
    ("content_type", "path", "extension"),
    [
        ("text/html", "/page", ".html"),
        ("application/xhtml+xml", "/page.pdf", ".html"),
        ("application/pdf", "/download?id=3", ".pdf"),
        ("application/octet-stream", "/files/Report.DOCX", ".docx"),
        ("text/plain", "/notes/readme.md", ".md"),
        ("text/plain", "/notes/readme", ".txt"),
        ("application/zip", "/a.zip", None),
        ("", "/unknown", None),
    ],
)
def test_extension_from_content_type(content_type: str, path: str, extension: str | None) -> None:
    assert extension_for(content_type, path) == extension


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "start_url or a sitemap_url is required"),
        ({"start_url": "ftp://h/"}, "http:// or https://"),
        ({"start_url": "http://u:secret@h/"}, "user name or password"),
        ({"start_url": "http://a/", "sitemap_url": "http://b/sitemap.xml"}, "same scheme, host and port"),
        ({"start_url": "http://a/", "max_depth": -1}, "max_depth"),
        ({"start_url": "http://a/", "max_pages": 0}, "max_pages"),
        ({"start_url": "http://a/", "timeout_s": 0}, "timeout_s"),
        ({"start_url": "http://a/", "user_agent": ""}, "user_agent"),
        ({"start_url": "http://a/", "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"start_url": "http://a/", "depth": 2}, "depth"),
    ],
)
def test_wrong_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(SourceConfigError, match=message):
        make_connector("web", options)


def test_registered_as_web() -> None:
    connector = make_connector("web", {"start_url": "http://intranet.example/start"})
    assert isinstance(connector, WebConnector)
    assert connector.kind == "web"
    assert connector.root_key == "http://intranet.example:80/"


def test_synced_into_a_store_and_found_by_search(site: Site, assistant) -> None:
    from ingestion.source_sync import sync_source

    connector = WebConnector(start_url=site.url("/index.html"))
    pipeline = assistant.pipeline()
    try:
        first = sync_source(connector, pipeline, collection="intranet", groups=["staff"], cursor=None)
        docs = assistant.documents("intranet")
        stored = {d.path for d in docs}
        assert stored == _keys(site, DEPTHS)
        assert all(d.status == "ready" and d.groups == ["staff"] for d in docs), docs

        hits = assistant.search("how is the badge printer refilled with ribbons", k=3)
        assert hits and hits[0].path == site.key("/level2/level3.html")
        assert DEEP_SENTENCE in hits[0].text
        pdf_hits = assistant.search("orange helmets on level nine", k=3)
        assert pdf_hits[0].path == site.key("/manual.pdf")

        unchanged = sync_source(
            connector, pipeline, collection="intranet", groups=["staff"], cursor=first.cursor
        )
        assert {d.path for d in assistant.documents("intranet")} == stored

        (site.root / "level2" / "level3.html").unlink()
        sync_source(connector, pipeline, collection="intranet", groups=["staff"], cursor=unchanged.cursor)
        assert {d.path for d in assistant.documents("intranet")} == stored - {site.key("/level2/level3.html")}
    finally:
        connector.close()


def test_pages_the_page_limit_kept_from_reach_stay_as_stored(site: Site) -> None:
    """A crawl stopped by max_pages is a partial listing: it must not remove what it did not reach."""
    full = WebConnector(start_url=site.url("/index.html"))
    first = full.changes(None)
    (site.root / "lm.html").unlink()  # deleted, but not reached below: kept until a sync reaches it
    site.clear()

    limited = WebConnector(start_url=site.url("/index.html"), max_pages=3).changes(first.cursor)

    assert {h.path for h in site.page_hits()} == {"/index.html", "/level1.html", "/manual.pdf"}
    assert limited.present == first.present
    assert limited.documents == []
    assert any(
        "max_pages (3) reached" in n and f"{len(first.present) - 3} page(s) the previous sync indexed" in n
        for n in limited.notes
    )
    # The carried-over cursor entries keep the next full sync conditional: nothing is read again.
    site.clear()
    again = full.changes(limited.cursor)
    assert again.documents == []
    assert again.present == first.present - {site.key("/lm.html")}
    assert site.hits("/level2/level3.html")[-1].status == 304


# --- duplicates whose original changes -------------------------------------------------------------------
TWIN = "The twin pages both say the cafeteria opens at half past seven"


def _statuses(store, collection: str) -> dict[str, tuple[str, str | None]]:
    from sqlalchemy import select

    from retrieval.schema import Document

    cid = store.collection_id(collection)
    with store.sessions() as session:
        rows = session.execute(
            select(Document.path, Document.status, Document.error).where(Document.collection_id == cid)
        ).all()
    return {path: (status, error) for path, status, error in rows}


@pytest.fixture
def twins(serve, tmp_path: Path) -> Site:
    """A site with two pages of identical bytes: the store keeps the second as a duplicate of the first."""
    s = serve(Site(tmp_path / "twins"))
    s.write("/index.html", _page("Twins", "Two identical pages.", "a.html", "b.html"))
    s.write("/a.html", _page("Twin", TWIN))
    s.write("/b.html", _page("Twin", TWIN))
    s.write("/robots.txt", "")
    return s


def test_a_duplicate_whose_original_changed_is_fetched_again_and_keeps_its_own_text(
    twins: Site, store, embedder
) -> None:
    """The original's edit makes the duplicate "pending"; the listing does not offer the duplicate (it
    answered 304), so the sync asks the connector for it by key and stores its own content: it neither
    fails nor reads the original's new text."""
    from ingestion.pipeline import IngestPipeline
    from ingestion.source_sync import sync_source
    from retrieval.access import Principal
    from retrieval.search import HybridSearcher

    connector = WebConnector(start_url=twins.url("/index.html"))
    pipeline = IngestPipeline(store, embedder)
    searcher = HybridSearcher(store, lambda q: embedder.encode_query(q, threads=1))
    try:
        first = sync_source(connector, pipeline, collection="web", groups=["staff"], cursor=None)
        states = _statuses(store, "web")
        original = next(k for k, (status, _) in states.items() if status == "ready" and k.endswith("a.html"))
        duplicate = twins.key("/b.html")
        assert states[duplicate][0] == "duplicate", states

        twins.write("/a.html", _page("Twin", "The first twin now says the cafeteria is closed for repairs"))
        twins.clear()
        second = sync_source(connector, pipeline, collection="web", groups=["staff"], cursor=first.cursor)
        states = _statuses(store, "web")
        assert states[original][0] == "ready" and states[duplicate] == ("ready", None), states
        assert second.summary.files_failed == 0, second.summary.failures
        assert [h.status for h in twins.hits("/b.html")] == [304, 200]  # listed, then fetched by key

        staff = Principal("erin", frozenset({"staff"}))
        hits = searcher.search("when does the cafeteria open", principal=staff, k=5, mode="keyword")
        assert [h.path for h in hits if TWIN in h.text] == [duplicate]
        assert searcher.search("cafeteria opens", principal=Principal("x", frozenset({"y"})), k=5) == []
    finally:
        connector.close()
        searcher.close()


def test_a_duplicate_left_failed_by_an_earlier_version_is_read_again(twins: Site, store, embedder) -> None:
    """Before fetch_document, such a duplicate was marked failed ("cannot be read again") and, unchanged at
    its source, never offered again. The next sync now fetches it by key."""
    from sqlalchemy import update

    from ingestion.pipeline import RECORD_NOT_REREADABLE, IngestPipeline
    from ingestion.source_sync import sync_source
    from retrieval.schema import Document

    connector = WebConnector(start_url=twins.url("/index.html"))
    pipeline = IngestPipeline(store, embedder)
    try:
        first = sync_source(connector, pipeline, collection="web", groups=None, cursor=None)
        duplicate = twins.key("/b.html")
        with store.sessions() as session, session.begin():
            session.execute(
                update(Document)
                .where(Document.path == duplicate)
                .values(status="failed", error=RECORD_NOT_REREADABLE, duplicate_of=None, n_chunks=0)
            )
        second = sync_source(connector, pipeline, collection="web", groups=None, cursor=first.cursor)
        assert _statuses(store, "web")[duplicate][0] in ("ready", "duplicate")
        assert second.summary.files_failed == 0, second.summary.failures
    finally:
        connector.close()


def test_fetch_document_reads_a_page_by_key_and_refuses_other_keys(twins: Site) -> None:
    connector = WebConnector(start_url=twins.url("/index.html"))
    connector.changes(None)
    doc = connector.fetch_document(twins.key("/a.html"))
    assert doc is not None and doc.extension == ".html" and TWIN.encode() in doc.fetch()
    assert connector.fetch_document("http://127.0.0.1:1/a.html") is None  # another site
    twins.fail["/b.html"] = 503
    with pytest.raises(OSError, match=r"b\.html answered HTTP 503"):
        connector.fetch_document(twins.key("/b.html"))
    connector.close()
