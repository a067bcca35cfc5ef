"""The first admin of a fresh install, so there is someone who can sign in and create everyone else.

Run by `sparq ui` before the server starts (the operator reads its console) and again by the web app's
Assistant factory (a server started some other way); whichever comes first creates the admin.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from app.users import UserDirectory, UserError

ADMIN_NAME_ENV = "SPARQ_ADMIN_USER"
ADMIN_PASSWORD_ENV = "SPARQ_ADMIN_PASSWORD"
ADMIN_PASSWORD_FILE = "initial-admin-password.txt"

_admin_lock = threading.Lock()  # two sessions of one process starting at once create one admin


def ensure_admin(
    users: UserDirectory, data_dir: Path, announce: Callable[[str], None] | None = None
) -> str | None:
    """Create the first admin when there is none, so a fresh install can be signed into.

    The password comes from SPARQ_ADMIN_PASSWORD or is random; a random one is written to a file in
    `data_dir` readable only by the operator (never to the web page or the log), and the console
    (`announce`, else stderr) is told where it is; a random one must be changed at the first sign-in before
    any page but Account opens.
    Returns the name of the admin created, or None when one already existed."""
    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    with _admin_lock:
        if users.count_admins() > 0:
            return None
        name = os.environ.get(ADMIN_NAME_ENV, "admin")
        given = os.environ.get(ADMIN_PASSWORD_ENV)
        password = given or secrets.token_urlsafe(15)
        try:
            # A generated password has sat in a file: it must be replaced before anything else.
            users.add(name, role="admin", password=password, must_change_password=not given)
        except UserError:
            if users.count_admins() > 0:  # another process created it in the meantime
                return None
            raise
        if given:
            say(f"sparq: created admin user {name!r} with the password from {ADMIN_PASSWORD_ENV}.")
            return name
        data_dir.mkdir(parents=True, exist_ok=True)
        secret_file = data_dir / ADMIN_PASSWORD_FILE
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(password + "\n")
        say(
            f"sparq: created admin user {name!r} with a random password, stored in {secret_file.resolve()} "
            "(readable only by this account). Sign in with it, change it on the Account page, then delete the file."
        )
        if sys.stderr.isatty():  # an operator at a terminal, not a log collector
            say(f"sparq: initial password for {name!r}: {password}")
        return name
