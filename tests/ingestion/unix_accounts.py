"""Real Unix groups and users for the folder-source tests: created with groupadd/useradd, removed after the
test, and real ACLs through setfacl. Tests that use them are skipped (with the reason) unless they run as
root on a machine with the acl tools and a file system that stores ACLs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def require_acl_tools(where: Path) -> None:
    """Skip unless this test can create accounts and set ACLs on files under `where`."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test creates Unix groups and users (groupadd/useradd)")
    for tool in ("groupadd", "useradd", "groupdel", "userdel", "setfacl", "chgrp"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (setfacl: Debian package acl)")
    probe = where / ".acl-probe"
    probe.write_text("x")
    try:
        done = subprocess.run(["setfacl", "-m", "u:root:r", str(probe)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"the file system under {where} does not store ACLs: {done.stderr.strip()}")
    finally:
        probe.unlink()


@dataclass
class Accounts:
    """Groups and users made for one test, each name unique to it (so parallel runs never share one)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    groups: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    def group(self, role: str) -> str:
        name = f"sq{role}{self.tag}"
        run("groupadd", name)
        self.groups.append(name)
        return name

    def user(self, role: str) -> str:
        name = f"sq{role}{self.tag}"
        run("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name)
        self.users.append(name)
        return name

    def remove(self) -> None:
        for name in reversed(self.users):
            subprocess.run(["userdel", name], capture_output=True)
        for name in reversed(self.groups):
            subprocess.run(["groupdel", name], capture_output=True)


@contextlib.contextmanager
def accounts(where: Path) -> Iterator[Accounts]:
    require_acl_tools(where)
    made = Accounts()
    try:
        yield made
    finally:
        made.remove()


def unused_id(lookup, start: int = 61000) -> int:
    """A numeric id that names no group (or user) on this machine."""
    for candidate in range(start, start + 4000):
        try:
            lookup(candidate)
        except KeyError:
            return candidate
    raise AssertionError("no unused id found")


@contextlib.contextmanager
def as_user(name: str) -> Iterator[None]:
    """Run the block with `name`'s effective uid (and no supplementary groups), then become root again."""
    import pwd

    entry = pwd.getpwnam(name)
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)
