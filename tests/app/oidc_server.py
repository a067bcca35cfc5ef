"""A real OpenID Connect provider for tests: the `oidc-provider` npm package (a certified implementation) run
by Node.js on a free loopback port, with a config this module writes: clients, an RSA signing key made
here, and an accounts file the provider reads at every sign-in (so a test changes groups "at the provider").

In front of it sits a small reverse proxy, which is the issuer everyone talks to. It passes everything
through, except that `proxy.mode` can make it rewrite the ID token in the token endpoint's answer: altered
claims under the original signature, or re-signed with a wrong audience, a wrong issuer, a past expiry, or
a key the provider does not publish. Those are the tokens a relying party must refuse.

`python -m tests.app.oidc_server install` installs the npm package (scripts/test.sh runs it); the fixture
installs it too when it is missing and npm is there, and skips only when Node.js or npm is absent.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.processes import stop_process

HERE = Path(__file__).resolve().parent / "oidc"
NODE = shutil.which("node")
NPM = shutil.which("npm")
CLIENT_ID, CLIENT_SECRET = "sparq", "sparq-test-client-secret"
OTHER_CLIENT_ID, OTHER_CLIENT_SECRET = "other-app", "other-app-test-secret"
ACCOUNTS = {
    "alice": {"groups": ["hr"], "email": "alice@example.org", "name": "Alice"},
    "bob": {"groups": ["eng"], "email": "bob@example.org", "name": "Bob"},
    "carol": {"groups": ["eng", "sparq-admins"], "email": "carol@example.org", "name": "Carol"},
}
ADMIN_GROUP = "sparq-admins"
TAMPER_MODES = ("tamper", "audience", "issuer", "expired", "unknown_key")


def node_dir() -> Path:
    """Where the npm package is installed: outside the repository, kept between runs."""
    return Path(os.environ.get("SPARQ_OIDC_NODE_DIR") or Path.home() / ".cache" / "sparq-test-oidc")


def _installed(folder: Path) -> bool:
    wanted = json.loads((HERE / "package.json").read_text())["dependencies"]["oidc-provider"]
    package = folder / "node_modules" / "oidc-provider" / "package.json"
    return package.is_file() and json.loads(package.read_text()).get("version") == wanted


def install(folder: Path | None = None) -> Path:
    """`npm ci` the provider into `folder` (default node_dir()) unless the pinned version is there."""
    folder = folder or node_dir()
    if _installed(folder):
        return folder
    if NPM is None:
        raise RuntimeError("npm is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(HERE / name, folder / name)
    subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True, timeout=600
    )
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(kid: str) -> Any:
    from joserfc.jwk import RSAKey

    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)


def _resign(id_token: str, key: Any, **changes: Any) -> str:
    """The ID token's header and claims with `changes` (None deletes), signed again with `key`."""
    from joserfc import jwt

    header = json.loads(_unb64(id_token.split(".")[0]))
    claims = json.loads(_unb64(id_token.split(".")[1]))
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode({"alg": "RS256", "kid": key.kid or header.get("kid")}, claims, key)


@dataclass
class TamperProxy:
    """The reverse proxy in front of the provider; `mode` (one of TAMPER_MODES, or None) picks the rewrite."""

    upstream_port: int
    key: Any
    mode: str | None = None
    rewritten: int = 0
    server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def rewrite(self, id_token: str) -> str:
        now = int(time.time())
        if self.mode == "tamper":  # grant oneself every group, keep the provider's signature
            head, payload, signature = id_token.split(".")
            claims = json.loads(_unb64(payload))
            claims["groups"] = sorted({*claims.get("groups", []), "hr", "eng", ADMIN_GROUP})
            return ".".join([head, _b64(json.dumps(claims).encode()), signature])
        if self.mode == "audience":
            return _resign(id_token, self.key, aud=OTHER_CLIENT_ID, azp=None)
        if self.mode == "issuer":
            return _resign(id_token, self.key, iss="http://127.0.0.1:9/not-the-issuer")
        if self.mode == "expired":
            return _resign(id_token, self.key, iat=now - 7200, exp=now - 3600)
        if self.mode == "unknown_key":
            return _resign(id_token, _signing_key("not-published"))
        return id_token

    def start(self) -> int:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")
                }
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    out_headers = response.getheaders()
                    status = response.status
                except OSError:  # the provider is not up (yet): what a real proxy answers
                    self.send_error(502)
                    return
                finally:
                    conn.close()
                if proxy.mode and urlsplit(self.path).path == "/token" and status == 200:
                    answer = json.loads(data)
                    if "id_token" in answer:
                        answer["id_token"] = proxy.rewrite(answer["id_token"])
                        proxy.rewritten += 1
                        data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in out_headers:
                    if name.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "keep-alive",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            do_GET = do_POST = do_HEAD = _forward

        port = _free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class OidcProvider:
    issuer: str
    accounts_file: Path
    proxy: TamperProxy
    redirect_uri: str
    log_file: Path

    def set_groups(self, user: str, groups: list[str]) -> None:
        """Change a user's groups at the provider (read at the next sign-in)."""
        accounts = json.loads(self.accounts_file.read_text())
        accounts[user]["groups"] = groups
        self.accounts_file.write_text(json.dumps(accounts))

    def metadata(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=10) as r:
            return json.loads(r.read())

    def tokens_for(
        self, user: str, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET
    ) -> dict:
        """A real authorization-code sign-in (with PKCE) of `user` at the provider, driven over HTTP the way a
        browser would: the provider's own login form, then the code exchanged at its token endpoint."""
        import httpx

        meta = self.metadata()
        verifier = secrets.token_urlsafe(48)
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        params = {
            "client_id": client_id,
            "response_type": "code",
            "scope": "openid profile email",
            "redirect_uri": self.redirect_uri,
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        with httpx.Client(timeout=30, follow_redirects=False) as client:
            response = client.get(f"{meta['authorization_endpoint']}?{urlencode(params)}")
            for _ in range(10):
                location = response.headers.get("location", "")
                if location.startswith(self.redirect_uri):
                    break
                if response.status_code in (301, 302, 303, 307, 308):
                    response = client.get(httpx.URL(str(response.url)).join(location))
                    continue
                form = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', response.text)
                if response.status_code == 200 and form and 'name="login"' in response.text:
                    response = client.post(
                        html.unescape(form.group(1)),
                        data={"prompt": "login", "login": user, "password": "any"},
                    )
                    continue
                raise AssertionError(
                    f"unexpected answer from the provider: {response.status_code} {response.text[:500]}"
                )
            query = parse_qs(urlsplit(location).query)
            if "code" not in query:
                raise AssertionError(f"no code in the redirect: {location}")
            token = client.post(
                meta["token_endpoint"],
                auth=(client_id, client_secret),
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": verifier,
                },
            )
            token.raise_for_status()
            return dict(token.json())


def run_oidc_provider(
    folder: Path, redirect_uri: str, post_logout_uri: str | None = None, *, id_token_ttl: int = 3600
) -> Iterator[OidcProvider]:
    """Start the provider (behind its proxy) in `folder`; yields once discovery answers; stops it afterwards."""
    import pytest

    if NODE is None:
        pytest.skip("Node.js is not installed (Debian package nodejs); the OpenID Connect tests need it")
    try:
        modules = install() / "node_modules"
    except RuntimeError as exc:
        pytest.skip(f"oidc-provider is not installed and cannot be: {exc}")
    folder.mkdir(parents=True, exist_ok=True)
    key = _signing_key("sparq-test-key")
    upstream = _free_port()
    proxy = TamperProxy(upstream, key)
    issuer = f"http://127.0.0.1:{proxy.start()}"
    accounts_file = folder / "accounts.json"
    accounts_file.write_text(json.dumps(ACCOUNTS))
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [redirect_uri],
        "post_logout_redirect_uris": [post_logout_uri or redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    }
    other = {**client, "client_id": OTHER_CLIENT_ID, "client_secret": OTHER_CLIENT_SECRET}
    config = folder / "provider.json"
    config.write_text(
        json.dumps(
            {
                "issuer": issuer,
                "port": upstream,
                "clients": [client, other],
                "accounts_file": str(accounts_file),
                "jwks": {"keys": [key.as_dict(private=True)]},
                "id_token_ttl": id_token_ttl,
            }
        )
    )
    log_file = folder / "provider.log"
    log = open(log_file, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [NODE, str(HERE / "provider.js"), str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SPARQ_OIDC_NODE_MODULES": str(modules)},
    )
    provider = OidcProvider(issuer, accounts_file, proxy, redirect_uri, log_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"oidc-provider exited with {proc.returncode}: {log_file.read_text()[-3000:]}")
            try:
                provider.metadata()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"oidc-provider did not answer within 60 s: {log_file.read_text()[-3000:]}")
                time.sleep(0.2)
        yield provider
    finally:
        stop_process(proc, 10)
        log.close()
        proxy.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m tests.app.oidc_server install")
    print(f"oidc-provider installed in {install()}")
