"""Throttled password checks (app.ui.signin_throttle) on the real database, without a browser: the limits,
the address failures are counted by, and what is logged. The same through the real sign-in page:
test_session.py and test_sessions_security.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.database import open_database
from app.ui.signin_throttle import (
    FAILURE_WINDOW_S,
    MAX_ADDRESS_FAILURES,
    MAX_FAILURES,
    UNKNOWN_ADDRESS,
    PasswordGate,
    signin_throttle,
    throttle_address,
)
from app.users import TooManyAttempts, UserDirectory

HERE, ELSEWHERE = "203.0.113.7", "198.51.100.2"
PASSWORD = "alice-pass-123"


@pytest.fixture
def users(database_url: str) -> Iterator[UserDirectory]:
    engine = open_database(database_url)
    directory = UserDirectory(engine)
    directory.add("alice", groups=["staff"], password=PASSWORD)
    yield directory
    engine.dispose()


@pytest.fixture
def gate(users: UserDirectory) -> PasswordGate:
    return PasswordGate(users, signin_throttle(users.engine))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        (HERE, "192.0.2.9", HERE),  # a real peer wins over any header
        ("x" * 300, None, "x" * 100),
        (None, "10.0.0.1, 192.0.2.5", "forwarded:192.0.2.5"),  # the entry the local proxy added
        ("", " 192.0.2.5 ", "forwarded:192.0.2.5"),
        (object(), "192.0.2.5", "forwarded:192.0.2.5"),  # not a str (AppTest has no server)
        (None, "   ", UNKNOWN_ADDRESS),
        (None, None, UNKNOWN_ADDRESS),
    ],
)
def test_failures_are_counted_by_the_peer_else_the_proxys_entry_else_one_bucket(
    peer, forwarded_for, expected
):
    assert throttle_address(peer, forwarded_for) == expected


def test_the_web_apps_limits(users):
    throttle = signin_throttle(users.engine)
    assert (throttle.per_name, throttle.per_address, throttle.window_s) == (
        MAX_FAILURES,
        MAX_ADDRESS_FAILURES,
        FAILURE_WINDOW_S,
    )


def test_a_right_password_signs_in_a_wrong_one_does_not(gate):
    user = gate.sign_in(" alice ", PASSWORD, HERE)  # the typed name is stripped
    assert user is not None and user.name == "alice"
    assert gate.sign_in("alice", "wrong-password", HERE) is None
    assert gate.sign_in("nobody", PASSWORD, HERE) is None


def test_repeated_wrong_passwords_refuse_even_the_right_one_from_that_address_only(gate):
    for _ in range(MAX_FAILURES):
        assert gate.sign_in("alice", "wrong-password", HERE) is None
    with pytest.raises(TooManyAttempts):
        gate.sign_in("alice", PASSWORD, HERE)
    assert gate.sign_in("alice", PASSWORD, ELSEWHERE) is not None


def test_a_right_password_clears_the_names_count(gate):
    for _ in range(MAX_FAILURES - 1):
        gate.sign_in("alice", "wrong-password", HERE)
    assert gate.sign_in("alice", PASSWORD, HERE) is not None
    for _ in range(MAX_FAILURES - 1):
        gate.sign_in("alice", "wrong-password", HERE)
    assert gate.sign_in("alice", PASSWORD, HERE) is not None  # not refused: the count started again


def test_one_address_trying_many_names_is_stopped(gate):
    for i in range(MAX_ADDRESS_FAILURES):
        assert gate.sign_in(f"guess{i}", "Winter2026!", HERE) is None
    with pytest.raises(TooManyAttempts):
        gate.sign_in("alice", PASSWORD, HERE)


def test_the_account_pages_recheck_counts_with_sign_in(gate, users):
    alice = users.get("alice")
    assert gate.recheck(alice, PASSWORD, HERE)
    assert not gate.recheck(alice, "not-my-password", HERE)
    for _ in range(MAX_FAILURES - 1):
        gate.sign_in("alice", "wrong-password", HERE)
    with pytest.raises(TooManyAttempts):
        gate.recheck(alice, PASSWORD, HERE)
    assert gate.recheck(alice, PASSWORD, ELSEWHERE)


def test_failures_log_the_address_and_a_count_never_the_typed_name(gate, users, caplog):
    caplog.set_level(logging.INFO)
    gate.sign_in("Tr0ub4dor&3-typed-as-name", "x-password-1", HERE)
    gate.sign_in("alice", "y-password-2", HERE)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"failed sign-in from {HERE} (1 in the last 300 s from this address)",
        f"failed sign-in from {HERE} (2 in the last 300 s from this address)",
    ]
    for _ in range(MAX_FAILURES - 1):  # alice's fifth wrong password from here
        gate.sign_in("alice", "wrong-password", HERE)
    caplog.clear()
    with pytest.raises(TooManyAttempts):
        gate.sign_in("alice", PASSWORD, HERE)
    assert [r.getMessage() for r in caplog.records] == [
        f"sign-in refused: too many failed attempts from {HERE}"
    ]
