"""IMAP mailboxes as a source that syncs itself: each message is one .eml document, read without marking it
seen (mailboxes are opened read-only, bodies fetched with BODY.PEEK[]).

IMAP messages never change: an edited message is a new UID. So a sync needs only, per mailbox, the
UIDVALIDITY and the highest UID already read (the cursor, a JSON string): the messages above it are the new
ones, `UID SEARCH ALL` says which are still there (keys only), and a changed UIDVALIDITY (the server
renumbered the mailbox) makes every message new, under new keys, while the old keys drop out of `present`.
A mailbox the server refuses to open (renamed, no longer shared) is noted and `unlisted`: its stored
messages stay, readable by admins only (the sync hides them: "no longer shared" may be a revocation), until
it can be read again or is taken out of the settings.

The password is no option value: it is read from the named environment variable or file each time a
connection is made, passed to the server, and kept nowhere (no attribute, repr, key, log or error message).
Standard library only (imaplib, ssl, email)."""

from __future__ import annotations

import base64
import contextlib
import functools
import imaplib
import ipaddress
import json
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import quote, unquote

from ingestion.connectors.base import (
    ChangeSet,
    Connector,
    RemoteDocument,
    SourceConfigError,
    SourceUnavailable,
)

log = logging.getLogger(__name__)

TLS_MODES = ("ssl", "starttls", "none")
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
_CURSOR_VERSION = 1
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[?[0-9A-Fa-f:.]+\]?")
_MESSAGE_START = re.compile(rb"^\d+ \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_DATE = re.compile(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_LISTING_ITEMS = "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
# UIDs per UID SEARCH: imaplib refuses an answer line over 1 MB, which one SEARCH ALL of a mailbox with some
# 100,000 messages would be; 20,000 UIDs of up to 10 digits stay well under it.
SEARCH_WINDOW = 20_000


class _Refused(SourceUnavailable):
    """The server answered, and said no (NO or BAD): the connection itself is fine."""


@dataclass(frozen=True)
class _Listed:
    """One message as the metadata fetch describes it."""

    uid: int
    size: int
    mtime: float
    subject: str | None


def mailbox_name(name: str) -> str:
    """`name` as an IMAP quoted string in modified UTF-7 (RFC 3501 5.1.3), which SELECT expects."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            packed = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii").rstrip("=")
            out.append("&" + packed.replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def internaldate_epoch(value: str) -> float:
    """Seconds since the epoch of an IMAP INTERNALDATE ("17-Jul-1996 02:44:25 -0700"); 0.0 (compare by
    content) when the server sent something else. Parsed by hand: strptime's %b follows the locale."""
    m = _DATE.fullmatch(value)
    if m is None or m.group(2).lower() not in _MONTHS:
        return 0.0
    day, mon, year, hh, mm, ss, sign, tzh, tzm = m.groups()
    offset = timedelta(hours=int(tzh), minutes=int(tzm)) * (-1 if sign == "-" else 1)
    try:
        when = datetime(
            int(year), _MONTHS[mon.lower()], int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset)
        )
    except ValueError:  # 31-Feb: a date no calendar has
        return 0.0
    return when.astimezone(UTC).timestamp()


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface: localhost, 127.0.0.0/8 or ::1 (a name that
    only resolves there is not trusted: resolution can change)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = exc.args[0] if len(exc.args) == 1 else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text) or type(exc).__name__


def _dropped(exc: SourceUnavailable) -> bool:
    """Whether a failed command lost the connection (server gone, or it hung up on us), not a refusal."""
    return isinstance(exc.__cause__, imaplib.IMAP4.abort | OSError)


class ImapConnector(Connector):
    """The messages of `mailboxes` on an IMAP server, read as `user`.

    `tls`: "ssl" (implicit TLS, port 993), "starttls" (port 143, upgraded before login) or "none" (the
    password travels in clear: only for a loopback host, 127.0.0.0/8, ::1 or localhost; any other host is a
    SourceConfigError). `ca_file`: the CA certificate(s) that
    signed the server's certificate, for a private CA; otherwise the system's CAs. `timeout_s`: for the
    connection and each command."""

    kind = "imap"

    def __init__(
        self,
        *,
        host: str,
        user: str,
        port: int | None = None,
        password_env: str | None = None,
        password_file: str | None = None,
        mailboxes: list[str] | None = None,
        tls: str = "ssl",
        ca_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if not isinstance(host, str) or not host.strip():
            raise SourceConfigError("imap source: a host is required")
        host = host.strip()
        if not _HOST.fullmatch(host):
            raise SourceConfigError(
                f"imap source: host must be a host name or an IP address (no scheme, path "
                f"or port), got {host!r}"
            )
        if not isinstance(user, str) or not user.strip():
            raise SourceConfigError("imap source: a user is required")
        if tls not in TLS_MODES:
            raise SourceConfigError(f"imap source: tls must be one of {', '.join(TLS_MODES)}, not {tls!r}")
        if port is None:
            port = DEFAULT_PORTS[tls]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SourceConfigError(f"imap source: port must be a number from 1 to 65535, got {port!r}")
        if (password_env is None) == (password_file is None):
            raise SourceConfigError(
                "imap source: set exactly one of password_env (the name of an environment "
                "variable that holds the password) or password_file (a file that holds it)"
            )
        if password_env is not None and not (
            isinstance(password_env, str) and _ENV_NAME.fullmatch(password_env)
        ):
            raise SourceConfigError(
                f"imap source: password_env must be an environment variable name, got "
                f"{password_env!r} (the password itself is never an option)"
            )
        if password_file is not None and (
            not isinstance(password_file, str) or not Path(password_file).expanduser().is_absolute()
        ):
            raise SourceConfigError(
                f"imap source: password_file must be an absolute path, got {password_file!r}"
            )
        if mailboxes is None:
            mailboxes = ["INBOX"]
        if isinstance(mailboxes, str) or not isinstance(mailboxes, list | tuple) or not mailboxes:
            raise SourceConfigError(
                f"imap source: mailboxes must be a non-empty list of mailbox names, e.g. "
                f'["INBOX"], got {mailboxes!r}'
            )
        for name in mailboxes:
            if not isinstance(name, str) or not name.strip():
                raise SourceConfigError(f"imap source: mailbox names must be non-empty text, got {name!r}")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
                raise SourceConfigError(f"imap source: mailbox name {name!r} holds a control character")
        if len(set(mailboxes)) != len(mailboxes):
            raise SourceConfigError(f"imap source: a mailbox is listed twice in {list(mailboxes)!r}")
        if ca_file is not None and (not isinstance(ca_file, str) or not ca_file.strip()):
            raise SourceConfigError(f"imap source: ca_file must be a path, got {ca_file!r}")
        if ca_file is not None and tls == "none":
            raise SourceConfigError(
                'imap source: ca_file is set but tls is "none": no certificate is checked'
            )
        if tls == "none" and not _is_loopback(host):
            raise SourceConfigError(
                f'imap source: tls "none" sends the password in clear, so it is only allowed for a server '
                f'on this machine (127.0.0.0/8, ::1, localhost), not {host!r}; use tls "starttls" or "ssl"'
            )
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise SourceConfigError(
                f"imap source: timeout_s must be a positive number of seconds, got {timeout_s!r}"
            )
        self.host = host.strip("[]") if ":" in host else host  # an IPv6 address, as sockets take it
        self.port = port
        self.user = user.strip()
        self.password_env = password_env
        self.password_file = password_file
        self.mailboxes = list(mailboxes)
        self.tls = tls
        self.ca_file = ca_file
        self.timeout_s = float(timeout_s)
        self._lock = threading.RLock()  # one connection, shared by changes() and every fetch()
        self._imap: imaplib.IMAP4 | None = None
        self._selected: tuple[str, int] | None = None  # (mailbox, UIDVALIDITY) of the open mailbox

    def __repr__(self) -> str:
        secret = (
            f"password_env={self.password_env!r}"
            if self.password_env
            else f"password_file={self.password_file!r}"
        )
        return (
            f"ImapConnector(host={self.host!r}, port={self.port}, user={self.user!r}, {secret}, "
            f"mailboxes={self.mailboxes!r}, tls={self.tls!r}, ca_file={self.ca_file!r})"
        )

    # --- keys ----------------------------------------------------------------------------------------
    @property
    def root_key(self) -> str:
        """imap://user@host:port/: the prefix of every message key of this account."""
        host = f"[{self.host}]" if ":" in self.host else self.host.lower()
        return f"imap://{quote(self.user, safe='')}@{host}:{self.port}/"

    def key(self, mailbox: str, uidvalidity: int, uid: int) -> str:
        """A message's key: mailbox, UIDVALIDITY and UID identify it for as long as the server keeps it."""
        return f"{self.root_key}{quote(mailbox, safe='')}/{uidvalidity}/{uid}"

    def _where(self) -> str:
        return f"IMAP server {self.host}:{self.port} (user {self.user})"

    # --- the sync ------------------------------------------------------------------------------------
    def changes(self, cursor: str | None) -> ChangeSet:
        """Per mailbox: every UID there now (`present`) and the messages above the cursor's highest UID."""
        notes: list[str] = []
        seen = self._parse_cursor(cursor, notes)
        documents: list[RemoteDocument] = []
        present: set[str] = set()
        unlisted: list[str] = []
        refusals: list[_Refused] = []
        state: dict[str, dict[str, int]] = {}
        with self._lock:
            self._disconnect()  # a fresh connection per sync: an idle one may have been dropped by the server
            for mailbox in self.mailboxes:
                before = seen.get(mailbox)
                try:
                    uidvalidity, uidnext = self._select(mailbox)
                    uids = self._search_all(mailbox, uidnext)
                except _Refused as exc:  # this mailbox only (gone, renamed, not shared): its documents stay
                    refusals.append(exc)
                    notes.append(
                        f"{exc}; its stored messages are kept, readable by admins only until it opens again"
                    )
                    unlisted.append(f"{self.root_key}{quote(mailbox, safe='')}")
                    if before is not None:
                        state[mailbox] = before
                    continue
                present.update(self.key(mailbox, uidvalidity, uid) for uid in uids)
                last = 0
                if before is not None and before["uidvalidity"] == uidvalidity:
                    last = before["last_uid"]
                elif before is not None:
                    notes.append(
                        f"mailbox {mailbox!r}: UIDVALIDITY changed from {before['uidvalidity']} to "
                        f"{uidvalidity} (the server renumbered it); every message is read again"
                    )
                new = {uid for uid in uids if uid > last}
                if new:
                    for item in self._list(mailbox, last + 1):
                        if item.uid in new:  # not one appended since the search: the next sync takes it
                            documents.append(self._document(mailbox, uidvalidity, item))
                state[mailbox] = {"uidvalidity": uidvalidity, "last_uid": max(uids, default=last)}
        if len(refusals) == len(self.mailboxes):  # nothing could be read: a wrong setting, not a sync
            raise SourceUnavailable("; ".join(str(r) for r in refusals))
        cursor_out = json.dumps({"version": _CURSOR_VERSION, "mailboxes": state}, sort_keys=True)
        return ChangeSet(documents, present, cursor=cursor_out, notes=notes, unlisted=unlisted)

    def _parse_cursor(self, cursor: str | None, notes: list[str]) -> dict[str, dict[str, int]]:
        if cursor is None:
            return {}
        try:
            data = json.loads(cursor)
            boxes = data["mailboxes"] if data.get("version") == _CURSOR_VERSION else None
            if not isinstance(boxes, dict):
                raise ValueError("no mailboxes of this cursor version")
            out = {}
            for name, entry in boxes.items():
                uidvalidity, last_uid = int(entry["uidvalidity"]), int(entry["last_uid"])
                out[str(name)] = {"uidvalidity": uidvalidity, "last_uid": last_uid}
            return out
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Safe to start over: documents already stored are found unchanged by their size and date.
            notes.append(f"the stored cursor could not be read ({exc}); every message is listed again")
            return {}

    def _document(self, mailbox: str, uidvalidity: int, item: _Listed) -> RemoteDocument:
        return RemoteDocument(
            key=self.key(mailbox, uidvalidity, item.uid),
            size=item.size,
            mtime=item.mtime,
            extension=".eml",
            fetch=functools.partial(self.fetch_message, mailbox, uidvalidity, item.uid),
            title=item.subject,
        )

    def fetch_document(self, key: str) -> RemoteDocument | None:
        """A message again by its key (mailbox, UIDVALIDITY, UID), fetched when the document is read; None
        for a key that is not a message of this source's mailboxes."""
        rest = key[len(self.root_key) :] if key.startswith(self.root_key) else ""
        parts = rest.split("/")
        if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
            return None
        mailbox = unquote(parts[0])
        if mailbox not in self.mailboxes or self.key(mailbox, int(parts[1]), int(parts[2])) != key:
            return None
        return RemoteDocument(
            key=key,
            size=0,
            mtime=0,  # compared by digest
            extension=".eml",
            fetch=functools.partial(self.fetch_message, mailbox, int(parts[1]), int(parts[2])),
        )

    def fetch_message(self, mailbox: str, uidvalidity: int, uid: int) -> bytes:
        """The raw RFC 822 bytes of one message, without setting \\Seen. Reconnects once if the connection
        was dropped since the listing (the pipeline may fetch long after it)."""
        with self._lock:
            try:
                return self._fetch_body(mailbox, uidvalidity, uid)
            except SourceUnavailable as exc:
                if not _dropped(exc):
                    raise
                log.info("%s: connection lost (%s); reconnecting once", self._where(), exc.__cause__)
                self._disconnect()
            try:
                return self._fetch_body(mailbox, uidvalidity, uid)
            except SourceUnavailable as again:
                if not _dropped(again):
                    raise
                # Dropped twice on this very message. Dovecot says BYE (not NO) to a message file it cannot
                # read; if the server still lets us in and open the mailbox, the message is the problem:
                # it fails alone (OSError, its last good version kept) and the sync goes on.
                self._disconnect()
                self._select(mailbox)  # SourceUnavailable if the server itself is gone
                raise OSError(
                    f"{self.key(mailbox, uidvalidity, uid)}: the server closed the connection each time it "
                    f"was asked for this message ({_reason(again.__cause__ or again)}); the other messages "
                    "were read (see the server's log for why it cannot send this one)"
                ) from again

    def _fetch_body(self, mailbox: str, uidvalidity: int, uid: int) -> bytes:
        if self._selected != (mailbox, uidvalidity):
            now, _ = self._select(mailbox)
            if now != uidvalidity:
                raise SourceUnavailable(
                    f"{self._where()}: mailbox {mailbox!r} was renumbered (UIDVALIDITY "
                    f"{uidvalidity} -> {now}) during the sync; the next sync reads it again"
                )
        try:
            data = self._command(
                f"fetch message {uid} of mailbox {mailbox!r}",
                lambda imap: imap.uid("FETCH", str(uid), "(BODY.PEEK[])"),
            )
        except _Refused as exc:
            # The server answered NO/BAD for this message only (unreadable on its disk, a server bug): that
            # document fails and keeps its last good version; the sync goes on (see connectors/base.py).
            raise OSError(f"{self.key(mailbox, uidvalidity, uid)}: {exc}") from exc
        for part in data:
            if isinstance(part, tuple) and (m := _UID.search(part[0])) and int(m.group(1)) == uid:
                return bytes(part[1])
        raise FileNotFoundError(
            f"{self.key(mailbox, uidvalidity, uid)}: the message is no longer on the "
            "server (deleted since the listing)"
        )

    def close(self) -> None:
        """Log out and drop the connection (under the lock: a sync may be using it)."""
        with self._lock:
            self._disconnect()

    # --- IMAP ----------------------------------------------------------------------------------------
    def _select(self, mailbox: str) -> tuple[int, int | None]:
        """Open `mailbox` read-only (EXAMINE: nothing in it changes); its UIDVALIDITY and UIDNEXT (None when
        the server does not say)."""
        step = f"open mailbox {mailbox!r}"
        self._selected = None
        self._command(step, lambda imap: imap.select(mailbox_name(mailbox), readonly=True))
        assert self._imap is not None
        _, validity = self._imap.response("UIDVALIDITY")
        _, uidnext = self._imap.response("UIDNEXT")
        if not validity or validity[-1] is None:
            raise SourceUnavailable(f"{self._where()}: {step} failed: the server sent no UIDVALIDITY")
        uidvalidity = int(validity[-1])
        self._selected = (mailbox, uidvalidity)
        return uidvalidity, int(uidnext[-1]) if uidnext and uidnext[-1] is not None else None

    def _search_all(self, mailbox: str, uidnext: int | None) -> list[int]:
        """Every UID in the open mailbox: one UID SEARCH, or one per SEARCH_WINDOW UIDs below UIDNEXT."""
        step = f"list the messages of mailbox {mailbox!r}"
        searches: list[tuple[str, ...]]
        if uidnext is None or uidnext <= SEARCH_WINDOW + 1:
            searches = [("ALL",)]
        else:
            starts = range(1, uidnext, SEARCH_WINDOW)
            searches = [("UID", f"{a}:{a + SEARCH_WINDOW - 1}") for a in starts[:-1]]
            searches.append(("UID", f"{starts[-1]}:*"))  # with what arrived since the SELECT
        uids: set[int] = set()
        for criteria in searches:

            def search(imap: imaplib.IMAP4, c: tuple[str, ...] = criteria) -> tuple[str, list]:
                return imap.uid("SEARCH", *c)

            data = self._command(step, search)
            uids.update(int(uid) for line in data if isinstance(line, bytes) for uid in line.split())
        return sorted(uids)

    def _list(self, mailbox: str, first_uid: int) -> list[_Listed]:
        """Size, date and subject of the messages from `first_uid` up (one command, headers only)."""
        data = self._command(
            f"read the message list of mailbox {mailbox!r}",
            lambda imap: imap.uid("FETCH", f"{first_uid}:*", _LISTING_ITEMS),
        )
        # imaplib gives a message with a literal as (text before it, literal), its rest as the next bytes.
        messages: list[tuple[bytes, bytes]] = []
        for part in data:
            if isinstance(part, tuple):
                messages.append((part[0], part[1]))
            elif isinstance(part, bytes) and _MESSAGE_START.match(part):
                messages.append((part, b""))
            elif isinstance(part, bytes) and messages:
                text, literal = messages[-1]
                messages[-1] = (text + part, literal)
        out: list[_Listed] = []
        for text, header in messages:
            uid = _UID.search(text)
            if uid is None:  # an unsolicited FETCH (another client changed flags): not a listing answer
                continue
            size = _SIZE.search(text)
            date = _INTERNALDATE.search(text)
            subject = BytesHeaderParser(policy=policy.default).parsebytes(header).get("Subject")
            out.append(
                _Listed(
                    uid=int(uid.group(1)),
                    size=int(size.group(1)) if size else 0,
                    mtime=internaldate_epoch(date.group(1).decode("ascii", "replace")) if date else 0.0,
                    subject=(str(subject).strip() or None) if subject is not None else None,
                )
            )
        return out

    def _command(self, step: str, run: Callable[[imaplib.IMAP4], tuple[str, list]]) -> list:
        """Run one IMAP command on the connection (made if needed) and return its data; any failure is
        SourceUnavailable naming the server and the step (_Refused when the server said no), and a broken
        connection is dropped."""
        imap = self._connection()
        try:
            typ, data = run(imap)
        except (imaplib.IMAP4.abort, OSError) as exc:
            self._disconnect()
            raise SourceUnavailable(f"{self._where()}: {step} failed: {_reason(exc)}") from exc
        except imaplib.IMAP4.error as exc:  # a BAD answer
            raise _Refused(f"{self._where()}: {step} failed: {_reason(exc)}") from exc
        if typ != "OK":
            detail = data[-1] if data and data[-1] is not None else typ
            raise _Refused(f"{self._where()}: {step} failed: {_reason(imaplib.IMAP4.error(detail))}")
        return data

    def _connection(self) -> imaplib.IMAP4:
        if self._imap is None:
            self._imap = self._connect()
        return self._imap

    def _disconnect(self) -> None:
        imap, self._imap, self._selected = self._imap, None, None
        if imap is None:
            return
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError) as exc:  # already gone: only the socket is left to close
            log.debug("%s: logout failed (%s)", self._where(), exc)
            with contextlib.suppress(OSError):
                imap.shutdown()

    def _tls_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SourceUnavailable(
                f"{self._where()}: cannot read the CA file {self.ca_file}: {_reason(exc)}"
            ) from exc

    def _tls_failure(self, step: str, exc: BaseException) -> SourceUnavailable:
        hint = ""
        if isinstance(exc, ssl.SSLCertVerificationError):
            hint = (
                "; set ca_file to the CA certificate that signed the server's certificate"
                if self.ca_file is None
                else f"; is {self.ca_file} the CA that signed the server's certificate?"
            )
        return SourceUnavailable(f"{self._where()}: {step} failed: {_reason(exc)}{hint}")

    def _connect(self) -> imaplib.IMAP4:
        where = self._where()
        context = self._tls_context() if self.tls != "none" else None
        try:
            if context is not None and self.tls == "ssl":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout_s
                )
            else:
                imap = imaplib.IMAP4(self.host, self.port, timeout=self.timeout_s)
        except ssl.SSLError as exc:
            raise self._tls_failure("TLS handshake", exc) from exc
        except (OSError, imaplib.IMAP4.error) as exc:
            raise SourceUnavailable(f"{where}: connect failed: {_reason(exc)}") from exc
        imap.debug = 0  # imaplib's debug output would print the LOGIN command, password and all
        try:
            if context is not None and self.tls == "starttls":
                try:
                    imap.starttls(ssl_context=context)
                except ssl.SSLError as exc:
                    raise self._tls_failure("STARTTLS handshake", exc) from exc
                except (OSError, imaplib.IMAP4.error) as exc:
                    raise SourceUnavailable(f"{where}: STARTTLS failed: {_reason(exc)}") from exc
            self._login(imap)
        except BaseException:
            with contextlib.suppress(OSError):
                imap.shutdown()
            raise
        return imap

    def _password(self) -> str:
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise SourceUnavailable(
                    f"{self._where()}: the password environment variable {self.password_env} is not set"
                )
            return value
        assert self.password_file is not None
        path = Path(self.password_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceUnavailable(
                f"{self._where()}: cannot read the password file {path}: {exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeError:  # not chained: the error quotes bytes of the file
            raise SourceUnavailable(f"{self._where()}: the password file {path} is not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            raise SourceUnavailable(f"{self._where()}: the password file {path} is empty")
        return value

    def _login(self, imap: imaplib.IMAP4) -> None:
        if "LOGINDISABLED" in imap.capabilities:
            raise SourceUnavailable(
                f"{self._where()}: login failed: the server refuses passwords on a "
                f'connection without TLS; use tls "starttls" or "ssl"'
            )
        password = self._password()
        failure: str | None = None
        try:
            if (self.user + password).isascii():
                imap.login(self.user, password)
            else:  # LOGIN sends ASCII only; AUTHENTICATE PLAIN carries UTF-8
                credentials = f"\0{self.user}\0{password}".encode()
                imap.authenticate("PLAIN", lambda _challenge: credentials)
        except (imaplib.IMAP4.error, OSError) as exc:
            failure = _reason(exc).replace(password, "***")
        finally:
            del password
            # imaplib keeps the last lines it sent, LOGIN's password among them, for its debug output:
            # forget them, so that no traceback or debugger shows them for as long as the connection lives.
            sent = getattr(imap, "_cmd_log", None)
            if isinstance(sent, dict):
                sent.clear()
        if failure is not None:
            # Not chained: the original exception is the one place the password could still be.
            raise SourceUnavailable(f"{self._where()}: login failed: {failure}")
