"""Password checks in the web app behind the sign-in throttle: its limits, the address it counts by, and
the check-authenticate-count sequence shared by sign-in and the Account page's re-check.

The counting itself is `app.users.SigninThrottle` (kept in the database so every replica sees the same
failures). The HTTP API has no passwords to throttle: its `RateLimiter` bounds requests per API key, in
memory, which is another concept and stays with the API.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from app.users import SigninThrottle, TooManyAttempts, UserDirectory, UserInfo

log = logging.getLogger(__name__)

MAX_FAILURES = 5  # wrong passwords per (address, name) within the window
MAX_ADDRESS_FAILURES = 20  # ... per address, whatever the names (password spraying)
FAILURE_WINDOW_S = 300.0
UNKNOWN_ADDRESS = "unknown-address"  # one shared throttle bucket when the client address is not known


def throttle_address(peer: object, forwarded_for: object) -> str:
    """The client address to count failures by: the TCP peer of the connection; for a loopback peer (which
    Streamlit reports as None), a local reverse proxy's X-Forwarded-For (its last entry, the one the proxy
    itself added); else one shared constant bucket. Both values arrive untyped from the web framework."""
    if isinstance(peer, str) and peer:  # (no server, as under AppTest: not a str)
        return peer[:100]
    last = forwarded_for.rsplit(",", 1)[-1].strip() if isinstance(forwarded_for, str) else ""
    return f"forwarded:{last[:100]}" if last else UNKNOWN_ADDRESS


def signin_throttle(engine: Engine) -> SigninThrottle:
    """The web app's sign-in throttle with its limits, on the shared database so every replica counts alike."""
    return SigninThrottle(
        engine, per_name=MAX_FAILURES, per_address=MAX_ADDRESS_FAILURES, window_s=FAILURE_WINDOW_S
    )


class PasswordGate:
    """Every password the web app checks goes through here, so a guesser meets the same limits at the
    sign-in form and at the Account page. Failures are logged with the address and a count, never the typed
    name (often a mistyped password)."""

    def __init__(self, users: UserDirectory, throttle: SigninThrottle) -> None:
        self.users = users
        self.throttle = throttle

    def sign_in(self, name: str, password: str, address: str) -> UserInfo | None:
        """The user on a right password, None on a wrong one. Raises TooManyAttempts while `address` is over
        its limit, in total or for this name (then the password is not even checked)."""
        key = name.strip()[:200]
        try:
            self.throttle.check(address, key)
        except TooManyAttempts:
            log.warning("sign-in refused: too many failed attempts from %s", address)
            raise
        user = self.users.authenticate(key, password)
        if user is None:
            count = self.throttle.failed(address, key)
            log.warning(
                "failed sign-in from %s (%d in the last %d s from this address)",
                address,
                count,
                int(self.throttle.window_s),
            )
            return None
        self.throttle.succeeded(address, key)
        return user

    def recheck(self, user: UserInfo, password: str, address: str) -> bool:
        """Whether `password` is a signed-in user's current one (before a password change), throttled like
        sign-in: raises TooManyAttempts while `address` is over its limit."""
        self.throttle.check(address, user.name)
        if self.users.authenticate(user.name, password) is None:
            count = self.throttle.failed(address, user.name)
            log.warning(
                "wrong current password for %s from %s (%d recent failures from this address)",
                user.name,
                address,
                count,
            )
            return False
        self.throttle.succeeded(address, user.name)
        return True
