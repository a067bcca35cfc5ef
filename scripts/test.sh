#!/usr/bin/env bash
# Set up (first time), start PostgreSQL if it is down, then run the test suite on SQLite and the
# database-touching tests again on PostgreSQL. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# The browser end-to-end test drives Debian's Chromium; install it when we may (CI runs as root).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
      || echo "could not install chromium; the browser test will be skipped" >&2
  fi
fi

# The directory-sync tests run a real OpenLDAP server (Debian's slapd) that they configure themselves.
if [ ! -x /usr/sbin/slapd ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd) \
    || echo "could not install slapd; the LDAP tests will be skipped" >&2
fi

# OCR of scanned PDFs and images uses Debian's Tesseract (English and Simplified Chinese); the OCR tests
# typeset their Chinese page in WenQuanYi Zen Hei.
if { ! command -v tesseract >/dev/null 2>&1 || [ ! -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]; } \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim fonts-wqy-zenhei) \
    || echo "could not install tesseract-ocr; the OCR tests will be skipped" >&2
fi

# Source sync tests: folder permissions through POSIX ACLs (Debian's acl: setfacl) and mailboxes on a real
# IMAP server (Debian's Dovecot, started by the test on a loopback port; the package's own service stays off).
if { ! command -v setfacl >/dev/null 2>&1 || [ ! -x /usr/sbin/dovecot ]; } \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      acl dovecot-imapd) \
    || echo "could not install acl / dovecot-imapd; the folder-ACL and IMAP tests will be skipped" >&2
fi

# The single sign-on tests run a real OpenID Connect provider (npm's oidc-provider on Node.js).
if command -v npm >/dev/null 2>&1; then
  .venv/bin/python -m tests.app.oidc_server install \
    || echo "could not install oidc-provider; the OpenID Connect tests will be skipped" >&2
fi

PG_READY=0
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
      for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
    fi
  fi
  pg_isready -h 127.0.0.1 -p 5432 -q && PG_READY=1
fi

# The house rules, checked before any test: formatted, linted (line length included), type-checked.
echo "--- ruff format --check, ruff check, mypy ---"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy

.venv/bin/python -m pytest -q "$@"
if [ "$PG_READY" = 1 ]; then
  echo "--- again on PostgreSQL (127.0.0.1:5432/test) ---"
  SPARQ_TEST_DATABASE=postgresql .venv/bin/python -m pytest -q -m db "$@"
else
  echo "PostgreSQL is not reachable on 127.0.0.1:5432; the PostgreSQL pass was not run" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
fi
