"""Intranet web pages as a source that syncs itself: a polite crawler of one site, standard library only.

What is crawled: the pages reachable by `<a href>` from `start_url` within `max_depth` links, and/or the pages
a sitemap (`sitemap_url`, a `<urlset>` or a `<sitemapindex>`, gzipped or not) lists, each at depth 0. Only
URLs of the same scheme, host and port as those URLs are fetched (links elsewhere are not followed, and a
redirect to another host is not followed either); at most `max_pages` pages are requested per sync. A
sync stopped by that limit has not seen the whole site: the pages the previous sync knew (its cursor) that
this one did not reach stay present, kept as stored with their cursor entries, instead of being removed.

robots.txt is fetched once per sync and obeyed for `user_agent` (urllib.robotparser: plain path prefixes,
first matching rule wins, no `*`/`$` patterns), as is `<meta name="robots">` (noindex: not indexed;
nofollow: its links are not followed) and a robots.txt `Crawl-delay`. As RFC 9309 says, a robots.txt that
answers 4xx (missing) allows everything; one that cannot be read (connection error, timeout, 5xx, a
redirect to another host) stops the sync with `SourceUnavailable`: the crawler may not guess the rules,
and a sync that fetches nothing must not remove every page.

Keys are normalised URLs (lower-case scheme and host, explicit port, no fragment, dot segments removed,
percent escapes normalised), all under `root_key` `scheme://host:port/`. HTML pages get the extension
".html"; another type is kept when a loader reads it (the extension comes from Content-Type, or from the
URL when the type says nothing), others are skipped with a note.

Incremental: the cursor (JSON) keeps per URL the ETag, Last-Modified and SHA-256 of the body, and the page's
own links. The next sync asks with If-None-Match / If-Modified-Since; a page that answers 304, or 200 with
the same digest, is present but not a document to read. A 304 page's stored links are followed, so the
pages below it are still found. A page that answers 404/410 is gone (left out of `present`, so removed);
any other failure of a page (timeout, 5xx, 403) keeps it, and the pages under it, as stored, with a note.
The start URL or the sitemap failing at all raises `SourceUnavailable`: nothing is changed.

Bodies are downloaded once, during `changes()`; `fetch()` hands them back. Large bodies wait in a private
temporary folder instead of memory, removed by `close()` (or when the documents are dropped)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
import zlib
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from html.parser import HTMLParser
from io import BufferedWriter
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from ingestion.connectors.base import (
    ChangeSet,
    Connector,
    RemoteDocument,
    SourceConfigError,
    SourceUnavailable,
)

CURSOR_VERSION = 1
DEFAULT_MAX_PAGE_BYTES = 100 * 1024 * 1024
_IN_MEMORY_BYTES = 4 * 1024 * 1024  # a larger body waits in the spool folder until it is fetched
_READ_BLOCK = 64 * 1024
_MAX_SITEMAPS = 100  # sitemap files per sync (an index of indexes must end somewhere)
_NOTES_PER_KIND = 20  # per-page notes of one kind before they are summed up

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Gone, or now refused to us: a page the intranet has restricted must stop being served from the index.
_GONE = frozenset({401, 403, 404, 410})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "text/plain"})
_TYPE_ALIASES = {
    "application/x-pdf": "application/pdf",
    "text/x-markdown": "text/markdown",
    "application/csv": "text/csv",
    "text/x-csv": "text/csv",
    "image/jpg": "image/jpeg",
}
_CONDITIONAL = ("If-none-match", "If-modified-since")  # as urllib.request.Request stores header names

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/:@!$&'()*+,;=%"
_QUERY_SAFE = _PATH_SAFE + "?"


# --- URLs ----------------------------------------------------------------------------------------------


def _normalise_escapes(part: str, safe: str) -> str:
    """One spelling per URL: unreserved characters unescaped, other escapes upper-case, the rest escaped."""
    part = _STRAY_PERCENT.sub("%25", part)

    def fix(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return quote(_ESCAPE.sub(fix, part), safe=safe)


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def normalise_url(url: str, base: str | None = None) -> str | None:
    """The key of `url` (resolved against `base`): `scheme://host:port/path?query`, or None when it is not
    an http(s) URL with a host (mailto:, javascript:, a broken port)."""
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            return None
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number, brackets that do not close
        return None
    if not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    path = _remove_dot_segments(_normalise_escapes(parts.path or "/", _PATH_SAFE))
    query = _normalise_escapes(parts.query, _QUERY_SAFE)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _request_url(key: str) -> str:
    """The URL to ask for: the key without a default port (some virtual hosts match the Host header)."""
    parts = urlsplit(key)
    if parts.port == _DEFAULT_PORTS[parts.scheme]:
        hostname = parts.hostname or ""  # urlunsplit treats an empty netloc as it does None
        host = f"[{hostname}]" if ":" in hostname else hostname
        return parts._replace(netloc=host).geturl()
    return key


def _origin(key: str) -> str:
    """`scheme://host:port/` of a key."""
    parts = urlsplit(key)
    return f"{parts.scheme}://{parts.netloc}/"


# --- content types -------------------------------------------------------------------------------------


@cache
def _loader_types() -> dict[str, str]:
    """MIME type -> extension for what the loaders read (a loader's first extension where it has several)."""
    from ingestion.loaders import REGISTRY

    out: dict[str, str] = {}
    for ext, loader in REGISTRY.items():
        out.setdefault(loader.mime, ext)
    return out


def extension_for(content_type: str, url_path: str) -> str | None:
    """The loader extension for a response, or None when no loader reads it. The URL's own extension wins
    when it agrees with the type or the type is generic (octet-stream, text/plain: common for .md, .csv)."""
    from ingestion.loaders import mime_for, supported_extensions

    content_type = _TYPE_ALIASES.get(content_type, content_type)
    if content_type in _HTML_TYPES:
        return ".html"
    suffix = PurePosixPath(unquote(url_path)).suffix.lower()
    if suffix in supported_extensions() and (
        content_type in _GENERIC_TYPES or mime_for("x" + suffix) == content_type
    ):
        return suffix
    return _loader_types().get(content_type)


# --- HTML ----------------------------------------------------------------------------------------------


class _PageParser(HTMLParser):
    """Links, <base href>, <title> and <meta name=robots> of a page; nothing else is kept."""

    def __init__(self, robots_names: tuple[str, ...]) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base: str | None = None
        self.title_parts: list[str] = []
        self.noindex = False
        self.nofollow = False
        self._robots_names = robots_names
        self._in_title = False
        self._title_done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None}
        if tag == "a" and "href" in values:
            self.hrefs.append(values["href"])
        elif tag == "base" and "href" in values and self.base is None:
            self.base = values["href"]
        elif tag == "title" and not self._title_done:
            self._in_title = True
        elif tag == "meta" and values.get("name", "").strip().lower() in self._robots_names:
            words = {w.strip().lower() for w in values.get("content", "").split(",")}
            self.noindex |= bool(words & {"noindex", "none"})
            self.nofollow |= bool(words & {"nofollow", "none"})

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self._title_done = True

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)

    @property
    def title(self) -> str | None:
        return " ".join("".join(self.title_parts).split()) or None


def _decode_html(data: bytes, charset: str | None) -> str:
    """The charset of the Content-Type header when the bytes decode with it, else the HTML loader's rules."""
    if charset:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    from ingestion.loaders.html import decode_html

    return decode_html(data)


# --- responses -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Body:
    """A downloaded body: in memory, or in the sync's spool folder (which it keeps alive)."""

    size: int
    sha256: str
    data: bytes | None = None
    file: Path | None = None
    spool: tempfile.TemporaryDirectory[str] | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.file is not None
        return self.file.read_bytes()


@dataclass(frozen=True)
class _Fetched:
    key: str  # after same-site redirects
    extension: str
    charset: str | None
    etag: str | None
    last_modified: str | None
    body: _Body


@dataclass(frozen=True)
class _NotModified:
    key: str
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class _Failed:
    reason: str
    gone: bool = False  # 404/410, a redirect off the site, a type sparq cannot read: not a page to keep
    kind: str = ""  # the notes' bucket; default "gone" or "failed"


class _RedirectRefused(Exception):
    """A redirect the crawler may not follow (another host, or a path robots.txt disallows)."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects within the site only, swapping in the target's own validators."""

    def __init__(self, crawl: _Crawl) -> None:
        self._crawl = crawl

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        key = normalise_url(newurl)
        refusal = self._crawl.redirect_refusal(key, newurl)
        if refusal:
            fp.close()
            raise _RedirectRefused(f"redirects ({code}) to {newurl}: {refusal}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and key is not None:
            for name in _CONDITIONAL:
                new.headers.pop(name, None)
            for name, value in self._crawl.validators(key).items():
                new.add_header(name, value)
        return new


def _too_large(limit: int) -> str:
    return f"larger than max_page_bytes ({limit} bytes): not downloaded"


# --- the connector -------------------------------------------------------------------------------------


class WebConnector(Connector):
    """One intranet web site, crawled from `start_url` and/or read from `sitemap_url` (see the module).

    `max_depth`: links followed from an entry page (0: the entry pages only); `max_pages`: requests for pages
    per sync; `timeout_s`: per connection step; `user_agent`: sent, and the name robots.txt rules are read
    for; `max_page_bytes`: a larger body is not downloaded; `ca_file`: the CA bundle of an internal CA."""

    kind = "web"

    def __init__(
        self,
        start_url: str | None = None,
        sitemap_url: str | None = None,
        max_depth: int = 3,
        max_pages: int = 1000,
        timeout_s: float = 30,
        user_agent: str = "sparq",
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        ca_file: str | None = None,
    ) -> None:
        self.start_key = self._entry_key("start_url", start_url)
        self.sitemap_key = self._entry_key("sitemap_url", sitemap_url)
        entry_keys = [k for k in (self.start_key, self.sitemap_key) if k]
        if not entry_keys:
            raise SourceConfigError("web source: a start_url or a sitemap_url is required")
        origins = {_origin(k) for k in entry_keys}
        if len(origins) > 1:
            raise SourceConfigError(
                f"web source: start_url and sitemap_url must be on the same scheme, host and port "
                f"(got {' and '.join(sorted(origins))})"
            )
        self._root = origins.pop()
        self.max_depth = self._int("max_depth", max_depth, 0)
        self.max_pages = self._int("max_pages", max_pages, 1)
        self.max_page_bytes = self._int("max_page_bytes", max_page_bytes, 1)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise SourceConfigError(
                f"web source: timeout_s must be a positive number of seconds, not {timeout_s!r}"
            )
        self.timeout_s = float(timeout_s)
        if not isinstance(user_agent, str) or not user_agent.strip() or not user_agent.isprintable():
            raise SourceConfigError(
                f"web source: user_agent must be a non-empty printable name, not {user_agent!r}"
            )
        self.user_agent = user_agent.strip()
        if ca_file is not None and not (isinstance(ca_file, str) and Path(ca_file).is_file()):
            raise SourceConfigError(f"web source: ca_file {ca_file!r} is not a readable file")
        self.ca_file = ca_file
        self._spools: list[tempfile.TemporaryDirectory[str]] = []
        self._robots: RobotFileParser | None = None  # as the last changes() read them

    @staticmethod
    def _entry_key(name: str, url: str | None) -> str | None:
        if url is None or (isinstance(url, str) and not url.strip()):
            return None
        if not isinstance(url, str):
            raise SourceConfigError(f"web source: {name} must be a URL, not {url!r}")
        parts = urlsplit(url.strip())
        if parts.username is not None or parts.password is not None:
            # A key is stored and shown: credentials in it would leak. Authentication is not supported.
            raise SourceConfigError(f"web source: {name} must not carry a user name or password")
        key = normalise_url(url)
        if key is None:
            raise SourceConfigError(
                f"web source: {name} must be an http:// or https:// URL with a host, not {url!r}"
            )
        return key

    @staticmethod
    def _int(name: str, value: Any, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SourceConfigError(
                f"web source: {name} must be a whole number of at least {minimum}, not {value!r}"
            )
        return value

    @property
    def root_key(self) -> str:
        """The site's normalised root URL: every page key starts with it."""
        return self._root

    def changes(self, cursor: str | None) -> ChangeSet:
        """Crawl the site once, asking only for what changed since `cursor` (see the module). The previous
        answer's bodies are dropped: its documents cannot be fetched any more."""
        self.close()
        crawl = _Crawl(self, cursor)
        try:
            changes = crawl.run()
            self._robots = crawl.robots
            return changes
        finally:
            if crawl.spool is not None:
                self._spools.append(crawl.spool)

    def fetch_document(self, key: str) -> RemoteDocument | None:
        """A page of the site again, in full and now (no validators): the sync needs the content of a stored
        duplicate whose original changed, while the page itself answered "not modified". robots.txt as the
        last `changes()` read it; a page that fails now raises OSError with the reason."""
        if normalise_url(key) != key or not key.startswith(self._root):
            return None
        crawl = _Crawl(self, None)
        if self._robots is None:
            crawl.read_robots()
        else:
            crawl.robots = self._robots
        if not crawl.allowed(key):
            raise OSError(f"{key} is disallowed by robots.txt: not fetched")
        try:
            outcome = crawl.get(key)
        finally:
            if crawl.spool is not None:
                self._spools.append(crawl.spool)
        if isinstance(outcome, _Failed):
            raise OSError(f"{key} {outcome.reason}")
        if isinstance(outcome, _NotModified):  # no validators were sent: a server that says 304 regardless
            raise OSError(f"{key} answered 304 Not Modified to a request without validators")
        return RemoteDocument(
            key=key, size=outcome.body.size, mtime=0, extension=outcome.extension, fetch=outcome.body.read
        )

    def close(self) -> None:
        """Remove the bodies waiting in spool folders (documents not fetched by now cannot be)."""
        while self._spools:
            self._spools.pop().cleanup()

    # Used by _Crawl.
    def opener(self, crawl: _Crawl) -> urllib.request.OpenerDirector:
        """A urllib opener that follows redirects only within the site (and trusts `ca_file` when set)."""
        handlers: list[urllib.request.BaseHandler] = [_Redirects(crawl)]
        if self.ca_file:
            handlers.append(
                urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.ca_file))
            )
        return urllib.request.build_opener(*handlers)


@dataclass
class _Notes:
    """Per-page problems, by kind; past _NOTES_PER_KIND of a kind only their number is said."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, line: str) -> None:
        bucket = self.lines.setdefault(kind, [])
        if len(bucket) < _NOTES_PER_KIND:
            bucket.append(line)
        else:
            self.extra[kind] = self.extra.get(kind, 0) + 1

    def render(self) -> list[str]:
        out: list[str] = []
        for kind, bucket in self.lines.items():
            out.extend(bucket)
            if self.extra.get(kind):
                out.append(f"... and {self.extra[kind]} more: {kind}")
        return out


class _Crawl:
    """The state of one sync: the previous cursor's pages, what was found, and the queue."""

    def __init__(self, conn: WebConnector, cursor: str | None) -> None:
        self.conn = conn
        self.root = conn.root_key
        self.notes = _Notes()
        self.previous = self._previous(cursor)
        self.pages: dict[str, dict[str, Any]] = {}  # the next cursor's entries; also "done"
        self.present: set[str] = set()
        self.documents: list[RemoteDocument] = []
        self.spool: tempfile.TemporaryDirectory[str] | None = None
        self.robots = RobotFileParser()
        self.queue: deque[tuple[str, int]] = deque()
        self.queued: set[str] = set()
        self.disallowed: list[str] = []
        self.requests = 0
        self.reached: set[str] = set()  # every key requested this sync, whatever it answered
        self._opener = conn.opener(self)
        self._delay = 0.0
        self._last_request = 0.0

    def _previous(self, cursor: str | None) -> dict[str, dict[str, Any]]:
        if cursor is None:
            return {}
        try:
            data = json.loads(cursor)
            ok = (
                isinstance(data, dict)
                and data.get("version") == CURSOR_VERSION
                and isinstance(data.get("pages"), dict)
            )
        except ValueError as exc:
            self.notes.add(
                "cursor", f"the previous sync's cursor is not JSON ({exc}): every page is read in full"
            )
            return {}
        if not ok:
            self.notes.add(
                "cursor",
                f"the previous sync's cursor is not a version {CURSOR_VERSION} web cursor: "
                "every page is read in full",
            )
            return {}
        if data.get("root") != self.root:  # the source now points at another site
            self.notes.add(
                "cursor",
                f"the previous sync's cursor is for {data.get('root')}, not {self.root}: "
                "every page is read in full",
            )
            return {}
        return {k: v for k, v in data["pages"].items() if isinstance(v, dict)}

    # --- the sync ---

    def run(self) -> ChangeSet:
        conn = self.conn
        self.read_robots()
        if conn.start_key:
            if not self.allowed(conn.start_key):
                raise SourceUnavailable(
                    f"robots.txt of {self.root} disallows the start URL {conn.start_key} "
                    f"for user agent {conn.user_agent!r}"
                )
            self._enqueue(conn.start_key, 0)
        if conn.sitemap_key:
            for key in self._sitemap_pages(conn.sitemap_key):
                self._enqueue(key, 0)
        first = True
        while self.queue:
            if self.requests >= conn.max_pages:
                left = sum(1 for key, _ in self.queue if key not in self.pages)
                if left:
                    kept = self._keep_unreached()
                    self.notes.add(
                        "limit",
                        f"max_pages ({conn.max_pages}) reached: {left} more page(s) were not fetched; "
                        f"{kept} page(s) the previous sync indexed but this one did not reach are kept "
                        "as stored",
                    )
                break
            key, depth = self.queue.popleft()
            if key in self.pages:
                continue
            if not self.allowed(key):
                self.disallowed.append(key)
                continue
            is_start = first and key == conn.start_key
            first = False
            self._visit(key, depth, is_start)
        if self.disallowed:
            examples = ", ".join(self.disallowed[:3])
            self.notes.add(
                "robots",
                f"{len(self.disallowed)} page(s) disallowed by robots.txt for user agent "
                f"{conn.user_agent!r} were not fetched (e.g. {examples})",
            )
        cursor = json.dumps(
            {"version": CURSOR_VERSION, "root": self.root, "pages": self.pages},
            sort_keys=True,
            separators=(",", ":"),
        )
        return ChangeSet(self.documents, self.present, cursor=cursor, notes=self.notes.render())

    def _keep_unreached(self) -> int:
        """Carry over the previous cursor's pages this sync did not reach (it stopped at max_pages): a
        partial crawl says nothing about them, so they stay present as stored. Pages robots.txt now
        disallows are not kept. Returns how many indexed pages were kept."""
        kept = 0
        for key, entry in self.previous.items():
            if key in self.pages or key in self.reached or not key.startswith(self.root):
                continue
            if not self.allowed(key):
                continue
            self.pages[key] = entry
            if "redirect" not in entry and not entry.get("noindex"):
                self.present.add(key)
                kept += 1
        return kept

    def _visit(self, key: str, depth: int, is_start: bool) -> None:
        self.requests += 1
        self.reached.add(key)
        outcome = self.get(key)
        if isinstance(outcome, _Failed):
            if is_start:
                raise SourceUnavailable(f"start URL {key} {outcome.reason}")
            self._failed(key, depth, outcome)
            return
        final = outcome.key
        if final != key:
            self.pages[key] = {"redirect": final}
            if final in self.pages:
                return  # reached already by another link
        if isinstance(outcome, _NotModified):
            entry = self.previous.get(final)
            if entry is None or "redirect" in entry:
                # Only validators from the cursor are sent, so this is a server that answers 304 regardless.
                self._failed(
                    final, depth, _Failed("answered 304 Not Modified to a request without validators")
                )
                return
            entry = dict(entry)
            if outcome.etag:
                entry["etag"] = outcome.etag
            if outcome.last_modified:
                entry["last_modified"] = outcome.last_modified
            self.pages[final] = entry
            if not entry.get("noindex"):
                self.present.add(final)
            self._follow(entry, depth)
            return
        self._fetched(outcome, depth)

    def _fetched(self, page: _Fetched, depth: int) -> None:
        key, extension = page.key, page.extension
        entry: dict[str, Any] = {"sha256": page.body.sha256}
        if page.etag:
            entry["etag"] = page.etag
        if page.last_modified:
            entry["last_modified"] = page.last_modified
        title = None
        if extension == ".html":
            product = self.conn.user_agent.split("/")[0].strip().lower()  # "sparq" of "sparq/1.2"
            parser = _PageParser(("robots", product))
            try:
                parser.feed(_decode_html(page.body.read(), page.charset))
                parser.close()
            except AssertionError as exc:  # html.parser's reaction to some malformed markup
                self.notes.add("html", f"{key}: its links could not be read ({exc})")
            title = parser.title
            if parser.noindex:
                entry["noindex"] = True
            if not parser.nofollow:
                entry["links"] = self._links(parser, key)
        self.pages[key] = entry
        self._follow(entry, depth)
        if entry.get("noindex"):
            return
        self.present.add(key)
        before = self.previous.get(key, {})
        if before.get("sha256") == page.body.sha256:
            return  # served again in full, but the same bytes
        self.documents.append(
            RemoteDocument(
                key=key,
                size=page.body.size,
                mtime=0,
                extension=extension,
                fetch=page.body.read,
                title=title,
            )
        )

    def _failed(self, key: str, depth: int, failure: _Failed) -> None:
        if failure.gone:
            self.notes.add(failure.kind or "gone", f"{key} {failure.reason}: not indexed (removed if it was)")
            return
        entry = self.previous.get(key)
        self.notes.add(failure.kind or "failed", f"{key} {failure.reason}: kept as stored")
        if entry is None:
            self.present.add(key)
            return
        self.pages[key] = entry
        if "redirect" in entry:
            target = entry["redirect"]
            if isinstance(target, str) and target.startswith(self.root):
                self._enqueue(target, depth, front=True)
            return
        if not entry.get("noindex"):
            self.present.add(key)
        self._follow(entry, depth)

    def _links(self, parser: _PageParser, key: str) -> list[str]:
        """The page's links on this site, as paths (the cursor stays small), in page order, once each."""
        base = normalise_url(parser.base, key) if parser.base else None
        base = base or key
        out: dict[str, None] = {}
        for href in parser.hrefs:
            link = normalise_url(href, base)
            if link is not None and link.startswith(self.root):
                out.setdefault(link[len(self.root) - 1 :], None)
        return list(out)

    def _follow(self, entry: dict[str, Any], depth: int) -> None:
        if depth >= self.conn.max_depth:
            return
        links = entry.get("links")
        if not isinstance(links, list):
            return
        for path in links:
            if isinstance(path, str) and path.startswith("/"):
                self._enqueue(self.root[:-1] + path, depth + 1)

    def _enqueue(self, key: str, depth: int, front: bool = False) -> None:
        if key in self.queued and not front:
            return
        self.queued.add(key)
        if front:
            self.queue.appendleft((key, depth))
        else:
            self.queue.append((key, depth))

    # --- rules ---

    def allowed(self, key: str) -> bool:
        return self.robots.can_fetch(self.conn.user_agent, _request_url(key))

    def validators(self, key: str) -> dict[str, str]:
        entry = self.previous.get(key) or {}
        out: dict[str, str] = {}
        if isinstance(entry.get("etag"), str):
            out["If-None-Match"] = entry["etag"]
        if isinstance(entry.get("last_modified"), str):
            out["If-Modified-Since"] = entry["last_modified"]
        return out

    def redirect_refusal(self, key: str | None, newurl: str) -> str | None:
        if key is None:
            return "not an http(s) URL"
        if not key.startswith(self.root):
            return f"another site than {self.root}, not followed"
        if self.robots.mtime() and not self.allowed(key):  # mtime(): when robots.txt was read, 0 before
            return "disallowed by robots.txt"
        return None

    # --- HTTP ---

    def _open(self, key: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self._delay:
            wait = self._last_request + self._delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_request = time.monotonic()
        request = urllib.request.Request(
            _request_url(key), headers={"User-Agent": self.conn.user_agent, **headers}
        )
        response: http.client.HTTPResponse = self._opener.open(request, timeout=self.conn.timeout_s)
        return response

    def get(self, key: str) -> _Fetched | _NotModified | _Failed:
        """One page, conditionally; every way it can fail is a _Failed that says why."""
        try:
            with self._open(key, self.validators(key)) as response:
                final = normalise_url(response.geturl()) or key
                has_type = response.headers.get("Content-Type") is not None
                content_type = response.headers.get_content_type() if has_type else ""
                extension = extension_for(content_type, urlsplit(final).path)
                if extension is None:  # decided before the body is downloaded
                    what = content_type or "without a Content-Type"
                    return _Failed(f"is {what}, a type sparq does not read", gone=True, kind="type")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.conn.max_page_bytes:
                    return _Failed(_too_large(self.conn.max_page_bytes), gone=True, kind="size")
                body = self._read_body(response)
                if body is None:
                    return _Failed(_too_large(self.conn.max_page_bytes), gone=True, kind="size")
                return _Fetched(
                    key=final,
                    extension=extension,
                    charset=response.headers.get_content_charset(),
                    etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"),
                    body=body,
                )
        except HTTPError as exc:
            with exc:
                if exc.code == 304:
                    return _NotModified(
                        normalise_url(exc.geturl()) or key,
                        exc.headers.get("ETag"),
                        exc.headers.get("Last-Modified"),
                    )
                return _Failed(f"answered HTTP {exc.code} {exc.reason}", gone=exc.code in _GONE)
        except _RedirectRefused as exc:
            return _Failed(str(exc), gone=True)
        except URLError as exc:
            return _Failed(f"could not be reached: {exc.reason}")
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, broken responses
            return _Failed(f"could not be read: {type(exc).__name__}: {exc}")

    def _read_body(self, response: http.client.HTTPResponse) -> _Body | None:
        """The body, hashed while read; None past max_page_bytes. A large one goes to the spool folder."""
        limit = self.conn.max_page_bytes
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        path: Path | None = None
        fh: BufferedWriter | None = None
        try:
            while chunk := response.read(_READ_BLOCK):
                size += len(chunk)
                if size > limit:
                    if path is not None:
                        assert fh is not None  # opened together with path
                        fh.close()
                        fh = None
                        path.unlink()
                    return None
                digest.update(chunk)
                if fh is None and size > _IN_MEMORY_BYTES:
                    if self.spool is None:
                        self.spool = tempfile.TemporaryDirectory(prefix="sparq-web-")
                    fd, name = tempfile.mkstemp(dir=self.spool.name, suffix=".body")
                    path = Path(name)
                    fh = open(fd, "wb")  # noqa: SIM115 - closed in finally, or when the body is complete
                    fh.writelines(chunks)
                    chunks = []
                if fh is not None:
                    fh.write(chunk)
                else:
                    chunks.append(chunk)
        except BaseException:
            if fh is not None:
                fh.close()
                fh = None
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        finally:
            if fh is not None:
                fh.close()
        if path is not None:
            return _Body(size, digest.hexdigest(), file=path, spool=self.spool)
        return _Body(size, digest.hexdigest(), data=b"".join(chunks))

    def read_robots(self) -> None:
        """robots.txt, once: 4xx allows everything (RFC 9309); anything else unreadable stops the sync."""
        url = self.root + "robots.txt"
        try:
            with self._open(url, {}) as response:
                body = self._read_body(response)
        except HTTPError as exc:
            with exc:
                if 400 <= exc.code < 500:
                    self.robots.parse([])
                    return
                raise SourceUnavailable(
                    f"{url} answered HTTP {exc.code} {exc.reason}: the site's rules for "
                    "crawlers are unknown, so nothing is fetched"
                ) from exc
        except _RedirectRefused as exc:
            raise SourceUnavailable(f"{url} {exc}: the site's rules for crawlers are unknown") from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, URLError) else f"{type(exc).__name__}: {exc}"
            raise SourceUnavailable(f"{self.root} could not be reached (robots.txt: {reason})") from exc
        if body is None:
            raise SourceUnavailable(f"{url} is larger than max_page_bytes ({self.conn.max_page_bytes} bytes)")
        self.robots.parse(body.read().decode("utf-8", errors="replace").splitlines())
        delay = self.robots.crawl_delay(self.conn.user_agent)
        self._delay = float(delay) if delay else 0.0

    # --- sitemaps ---

    def _sitemap_pages(self, sitemap_key: str) -> list[str]:
        """The site's page keys a sitemap (or an index of sitemaps) lists; any sitemap that cannot be read
        raises SourceUnavailable, since its pages would otherwise all be removed."""
        pages: dict[str, None] = {}
        todo = deque([sitemap_key])
        seen = {sitemap_key}
        elsewhere = 0
        read = 0
        while todo:
            key = todo.popleft()
            if read >= _MAX_SITEMAPS:
                self.notes.add("sitemap", f"more than {_MAX_SITEMAPS} sitemaps: {len(todo) + 1} not read")
                break
            read += 1
            kind, locs = self._sitemap(key)
            for loc in locs:
                loc_key = normalise_url(loc, key)
                if loc_key is None or not loc_key.startswith(self.root):
                    elsewhere += 1
                elif kind == "sitemapindex":
                    if loc_key not in seen:
                        seen.add(loc_key)
                        todo.append(loc_key)
                else:
                    pages.setdefault(loc_key, None)
        if elsewhere:
            self.notes.add("sitemap", f"{elsewhere} sitemap entries outside {self.root} were not followed")
        return list(pages)

    def _sitemap(self, key: str) -> tuple[str, list[str]]:
        if not self.allowed(key):
            raise SourceUnavailable(
                f"robots.txt of {self.root} disallows the sitemap {key} for user agent "
                f"{self.conn.user_agent!r}"
            )
        outcome = self._get_plain(key)
        if isinstance(outcome, _Failed):
            raise SourceUnavailable(f"sitemap {key} {outcome.reason}")
        data = outcome
        if data[:2] == b"\x1f\x8b":
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                data = decompressor.decompress(data, self.conn.max_page_bytes + 1)
            except zlib.error as exc:
                raise SourceUnavailable(f"sitemap {key} is not valid gzip: {exc}") from exc
            if len(data) > self.conn.max_page_bytes:
                raise SourceUnavailable(f"sitemap {key} unpacks to more than max_page_bytes")
        if re.search(rb"<!(DOCTYPE|ENTITY)", data, re.IGNORECASE):
            raise SourceUnavailable(
                f"sitemap {key} declares a DTD or entities, which a sitemap never needs: not parsed"
            )
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise SourceUnavailable(f"sitemap {key} is not well-formed XML: {exc}") from exc
        kind = _local(root.tag)
        if kind not in ("urlset", "sitemapindex"):
            raise SourceUnavailable(f"sitemap {key} is a <{kind}>, not a <urlset> or <sitemapindex>")
        item = "url" if kind == "urlset" else "sitemap"
        locs = [
            (loc.text or "").strip()
            for child in root
            if _local(child.tag) == item
            for loc in child
            if _local(loc.tag) == "loc"
        ]
        return kind, [loc for loc in locs if loc]

    def _get_plain(self, key: str) -> bytes | _Failed:
        """A whole body without validators (sitemaps are read every sync)."""
        try:
            with self._open(key, {}) as response:
                body = self._read_body(response)
        except HTTPError as exc:
            with exc:
                return _Failed(f"answered HTTP {exc.code} {exc.reason}")
        except _RedirectRefused as exc:
            return _Failed(str(exc))
        except URLError as exc:
            return _Failed(f"could not be reached: {exc.reason}")
        except (OSError, http.client.HTTPException) as exc:
            return _Failed(f"could not be read: {type(exc).__name__}: {exc}")
        if body is None:
            return _Failed(_too_large(self.conn.max_page_bytes))
        return body.read()


def _local(tag: str) -> str:
    """An XML tag without its namespace (sitemaps come with and without one)."""
    return tag.rsplit("}", 1)[-1]
