"""A real IMAP server (Debian's Dovecot) for tests: configured in a temporary folder, in the foreground, on
free loopback ports (IMAPS, and IMAP with STARTTLS), with a passwd-file user, a Maildir the fixture fills,
and TLS from a self-signed certificate the fixture makes; stopped by its PID when the test ends.

Run as root, Dovecot's own processes must not be root (the login process) and mail must not be read as
root: the auth process runs as root (it reads the passwd-file in the test's private folder), the login
process as Debian's `dovenull`, and the mail user as `nobody`, whose Maildir therefore lives in a folder of
its own that `nobody` may enter. Run as another user, everything runs as that user, without chroots."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.app.ldap_server import _self_signed
from tests.processes import stop_process

DOVECOT = "/usr/sbin/dovecot"
USER = "alice"
PASSWORD = "test-only-imap-pw-7f3a"
UTF8_USER = "bob"
UTF8_PASSWORD = "pässwörd-ünïcode-9c1e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ImapServer:
    host: str
    imaps_port: int
    imap_port: int  # plain IMAP, upgraded by STARTTLS
    ca_file: Path
    home: Path  # the Maildir user's home
    folder: Path
    mail_uid: int
    mail_gid: int
    process: subprocess.Popen | None = None
    delivered: int = 0

    def client(self, user: str = USER, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
        """The test's own IMAP session (APPEND, STORE, EXPUNGE), logged in over IMAPS."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        imap = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=context, timeout=10)
        imap.login(user, password)
        return imap

    def deliver(self, msg: EmailMessage | bytes, *, folder: str | None = None, received: float) -> Path:
        """Put a message into the Maildir (INBOX, or the Maildir++ folder `folder`) as a file, unseen, with
        `received` as its INTERNALDATE (Dovecot takes it from the file's mtime)."""
        data = msg if isinstance(msg, bytes) else msg.as_bytes()
        data = data.replace(b"\r\n", b"\n")  # Maildir files hold Unix line ends
        box = self.home / "Maildir" / (f".{folder}" if folder else "")
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
            os.chown(box / sub, self.mail_uid, self.mail_gid)
        os.chown(box, self.mail_uid, self.mail_gid)
        self.delivered += 1
        name = f"{int(received)}.M{self.delivered}P{os.getpid()}.sparqtest"
        staged = box / "tmp" / name
        staged.write_bytes(data)
        os.chown(staged, self.mail_uid, self.mail_gid)
        os.utime(staged, (received, received))
        path = box / "cur" / f"{name}:2,"  # no flags: unseen
        staged.rename(path)  # whole, never half-written, as a Maildir delivery must be
        return path

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _config(server: ImapServer, cert: Path, key: Path, users: Path, run_as: tuple[str, str] | None) -> str:
    """`run_as`: (user, group) of a non-root run, whose processes can neither change user nor chroot."""
    if run_as is None:
        accounts = ["default_internal_user = root", "default_login_user = dovenull"]
        unprivileged: list[str] = []
    else:
        user, group = run_as
        accounts = [
            f"default_internal_user = {user}",
            f"default_internal_group = {group}",
            f"default_login_user = {user}",
        ]
        unprivileged = ["service anvil {", "  chroot =", "}"]
    return "\n".join(
        [
            f"base_dir = {server.folder / 'run'}",
            f"state_dir = {server.folder / 'state'}",
            f"instance_name = sparq-test-{server.imaps_port}",
            f"log_path = {server.folder / 'dovecot.log'}",
            *accounts,
            "protocols = imap",
            "listen = 127.0.0.1",
            "ssl = yes",
            f"ssl_cert = <{cert}",
            f"ssl_key = <{key}",
            "auth_mechanisms = plain login",
            "mail_location = maildir:~/Maildir",
            "first_valid_uid = 1",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN {users}",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = {users}",
            "}",
            "service imap-login {",
            *(["  chroot ="] if run_as is not None else []),
            "  inet_listener imap {",
            "    address = 127.0.0.1",
            f"    port = {server.imap_port}",
            "  }",
            "  inet_listener imaps {",
            "    address = 127.0.0.1",
            f"    port = {server.imaps_port}",
            "    ssl = yes",
            "  }",
            "}",
            *unprivileged,
            "",
        ]
    )


def run_dovecot(folder: Path) -> Iterator[ImapServer]:
    """Start Dovecot configured in `folder`; yields once `alice` can log in; stops it afterwards."""
    if not Path(DOVECOT).exists():
        pytest.skip(
            "Dovecot is not installed (Debian package dovecot-imapd; scripts/test.sh installs it as root)"
        )
    as_root = os.geteuid() == 0
    if as_root:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        mail_root = Path(tempfile.mkdtemp(prefix="sparq-imap-"))
        mail_root.chmod(0o711)  # `nobody` may enter it, not list it
        run_as = None
    else:
        uid, gid = os.getuid(), os.getgid()
        mail_root = folder / "mail"
        run_as = (pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name)
    try:
        (folder / "run").mkdir(parents=True)
        (folder / "state").mkdir()
        cert, key = _self_signed(folder)
        server = ImapServer("127.0.0.1", _free_port(), _free_port(), cert, mail_root / USER, folder, uid, gid)
        utf8_home = mail_root / UTF8_USER
        for home in (server.home, utf8_home):
            (home / "Maildir").mkdir(parents=True)
            for path in (home, home / "Maildir"):
                os.chown(path, uid, gid)
                path.chmod(0o700)
        users = folder / "users"
        users.write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{server.home}::\n"
            f"{UTF8_USER}:{{PLAIN}}{UTF8_PASSWORD}:{uid}:{gid}::{utf8_home}::\n",
            encoding="utf-8",
        )
        users.chmod(0o600)
        conf = folder / "dovecot.conf"
        conf.write_text(_config(server, cert, key, users, run_as))
        console = open(folder / "dovecot.out", "wb")  # noqa: SIM115 - closed below
        server.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)], stdout=console, stderr=subprocess.STDOUT
        )
        try:
            _wait_until_ready(server)
            yield server
        finally:
            server.stop()
            console.close()
    finally:
        if as_root:
            shutil.rmtree(mail_root)


def _wait_until_ready(server: ImapServer) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            output = (server.folder / "dovecot.out").read_text(errors="replace")[-2000:]
            pytest.fail(f"dovecot exited with {server.process.returncode}: {output}\n{server.log()}")
        try:
            server.client().logout()
            return
        except (OSError, imaplib.IMAP4.error):
            if time.monotonic() > deadline:
                pytest.fail(f"dovecot did not accept a login within 30 s: {server.log()}")
            time.sleep(0.2)
