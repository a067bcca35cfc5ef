"""A real OpenLDAP server (Debian's slapd) for tests: configured in a temporary folder, on a free loopback
port, with StartTLS from a self-signed certificate the fixture makes, stopped when the test ends."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import stop_process

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "test-only-root-pw"


@dataclass(frozen=True)
class LdapServer:
    url: str
    ca_file: Path

    def connect(self):  # -> ldap3.Connection bound as the directory's root
        from ldap3 import Connection, Server

        return Connection(Server(self.url), ROOT_DN, ROOT_PASSWORD, auto_bind=True, raise_exceptions=True)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_slapd(folder: Path) -> Iterator[LdapServer]:
    """Start slapd in `folder`; yields once it accepts a root bind; stops it afterwards."""
    if not Path(SLAPD).exists():
        pytest.skip("slapd is not installed (Debian package slapd; scripts/test.sh installs it as root)")
    from ldap3.core.exceptions import LDAPException

    (folder / "db").mkdir(parents=True)
    cert, key = _self_signed(folder)
    conf = folder / "slapd.conf"
    conf.write_text(
        "\n".join(
            [
                *(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")),
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {folder / 'slapd.pid'}",
                f"TLSCertificateFile {cert}",
                f"TLSCertificateKeyFile {key}",
                "database mdb",
                "maxsize 10485760",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ROOT_DN}"',
                f"rootpw {ROOT_PASSWORD}",
                f"directory {folder / 'db'}",
                "",
            ]
        )
    )
    port = _free_port()
    url = f"ldap://127.0.0.1:{port}"
    log = open(folder / "slapd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", f"{url}/", "-d", "0"], stdout=log, stderr=subprocess.STDOUT
    )
    server = LdapServer(url, cert)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"slapd exited with {proc.returncode}: {(folder / 'slapd.log').read_text()[-2000:]}"
                )
            try:
                server.connect().unbind()
                break
            except LDAPException:
                if time.monotonic() > deadline:
                    pytest.fail("slapd did not accept a bind within 30 s")
                time.sleep(0.2)
        yield server
    finally:
        stop_process(proc, 10)
        log.close()
