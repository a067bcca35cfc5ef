"""LDAP / Active Directory group sync: the company directory decides who exists and which groups they have.

`sparq users sync-ldap` reads users and groups (nested groups resolved), then creates missing users,
replaces the groups of existing directory users, and disables users who left the directory (their query
log stays; disabled users cannot sign in, search or use their API keys). Local accounts that never came
from the directory (the first admin, service accounts) are left alone. A dry run only prints the plan.
"""

from __future__ import annotations

import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.users import UserDirectory, UserError


class DirectoryError(RuntimeError):
    """The directory could not be read as configured; the message says what to fix."""


@dataclass(frozen=True)
class LdapConfig:
    """How to reach the LDAP directory (SPARQ_LDAP_*) and where in it the users and groups are."""

    url: str
    bind_dn: str | None
    bind_password: str | None
    user_base: str
    group_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    name_attribute: str = "uid"  # sAMAccountName on Active Directory
    email_attribute: str = "mail"
    group_name_attribute: str = "cn"
    member_attribute: str = "member"
    start_tls: bool = False
    ca_file: str | None = None
    timeout_s: int = 10

    def __repr__(self) -> str:  # the bind password never prints
        return f"LdapConfig(url={self.url!r}, bind_dn={self.bind_dn!r}, user_base={self.user_base!r})"


@dataclass(frozen=True)
class DirectoryUser:
    """A person as the directory has them: name, entry and the groups they belong to."""

    name: str
    dn: str
    email: str | None
    groups: frozenset[str]


@dataclass
class SyncPlan:
    """What a sync changes, planned before anything is written, so a dry run shows exactly that."""

    create: list[DirectoryUser] = field(default_factory=list)
    update: list[tuple[DirectoryUser, list[str]]] = field(default_factory=list)  # (new, old groups)
    enable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    unchanged: int = 0

    def lines(self) -> list[str]:
        """What the sync does (or would do), one line per change."""
        out = [f"create  {u.name} groups={','.join(sorted(u.groups)) or '-'}" for u in self.create]
        out += [
            f"update  {u.name} groups {','.join(old) or '-'} -> {','.join(sorted(u.groups)) or '-'}"
            for u, old in self.update
        ]
        out += [f"enable  {name}" for name in self.enable]
        out += [f"disable {name} (gone from the directory)" for name in self.disable]
        return out


def _first(entry: Any, attribute: str) -> str | None:
    values = entry.get("attributes", {}).get(attribute)
    if isinstance(values, list):
        return str(values[0]) if values else None
    return str(values) if values else None


def _all(entry: Any, attribute: str) -> list[str]:
    values = entry.get("attributes", {}).get(attribute) or []
    return [str(v) for v in (values if isinstance(values, list) else [values])]


def _norm(dn: str) -> str:
    return ",".join(part.strip().lower() for part in dn.split(","))


def read_directory(config: LdapConfig) -> list[DirectoryUser]:
    """Every user under the user base with the names of all groups they belong to, directly or nested."""
    from ldap3 import NONE, SUBTREE, Connection, Server, Tls  # optional: only the sync needs it
    from ldap3.core.exceptions import LDAPException

    tls = (
        Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file)
        if (config.ca_file or config.start_tls or config.url.startswith("ldaps://"))
        else None
    )
    # No client-side schema (get_info=NONE, check_names=False): AD's and OpenLDAP's object classes differ.
    server = Server(
        config.url,
        use_ssl=config.url.startswith("ldaps://"),
        tls=tls,
        connect_timeout=config.timeout_s,
        get_info=NONE,
    )
    try:
        conn = Connection(
            server,
            user=config.bind_dn,
            password=config.bind_password,
            receive_timeout=config.timeout_s,
            raise_exceptions=True,
            check_names=False,
        )
        conn.open()
        if config.start_tls:
            conn.start_tls()
        conn.bind()
        users_raw = list(
            conn.extend.standard.paged_search(
                config.user_base,
                config.user_filter,
                SUBTREE,
                attributes=[config.name_attribute, config.email_attribute],
                paged_size=500,
                generator=True,
            )
        )
        groups_raw = list(
            conn.extend.standard.paged_search(
                config.group_base,
                config.group_filter,
                SUBTREE,
                attributes=[config.group_name_attribute, config.member_attribute],
                paged_size=500,
                generator=True,
            )
        )
        conn.unbind()
    except LDAPException as exc:
        # The message names the server and the failing step, never the bind password.
        raise DirectoryError(f"LDAP {config.url}: {type(exc).__name__}: {exc}") from exc
    group_names: dict[str, str] = {}
    parents: dict[str, set[str]] = {}  # member dn -> dns of the groups that list it
    for g in groups_raw:
        if g.get("type") != "searchResEntry":
            continue
        gdn = _norm(g["dn"])
        name = _first(g, config.group_name_attribute)
        if not name:
            continue
        group_names[gdn] = name
        for member in _all(g, config.member_attribute):
            parents.setdefault(_norm(member), set()).add(gdn)
    users: list[DirectoryUser] = []
    for u in users_raw:
        if u.get("type") != "searchResEntry":
            continue
        name = _first(u, config.name_attribute)
        if not name:
            continue
        seen: set[str] = set()
        queue = deque(parents.get(_norm(u["dn"]), ()))
        while queue:  # walk up through nested groups; `seen` stops membership cycles
            gdn = queue.popleft()
            if gdn in seen:
                continue
            seen.add(gdn)
            queue.extend(parents.get(gdn, ()))
        users.append(
            DirectoryUser(
                name,
                u["dn"],
                _first(u, config.email_attribute),
                frozenset(group_names[g] for g in seen if g in group_names),
            )
        )
    return users


def plan_sync(directory: list[DirectoryUser], users: UserDirectory) -> SyncPlan:
    """What a sync would change, comparing the directory with sparq's users."""
    plan = SyncPlan()
    existing = {u.name: u for u in users.list()}
    listed = {d.name for d in directory}
    for d in directory:
        current = existing.get(d.name)
        if current is None:
            plan.create.append(d)
            continue
        if current.source != "ldap":
            # A local account of the same name is not taken over silently.
            raise DirectoryError(
                f"user {d.name!r} exists as a {current.source} account; rename or remove it first"
            )
        if sorted(current.groups) != sorted(d.groups):
            plan.update.append((d, sorted(current.groups)))
        else:
            plan.unchanged += 1
        if current.disabled:
            plan.enable.append(d.name)
    plan.disable = sorted(
        n for n, u in existing.items() if u.source == "ldap" and not u.disabled and n not in listed
    )
    return plan


def apply_sync(plan: SyncPlan, users: UserDirectory) -> None:
    """Carry out a plan: create, regroup, re-enable and disable users."""
    for d in plan.create:
        try:
            users.add(d.name, groups=sorted(d.groups), source="ldap", email=d.email)
        except UserError as exc:
            raise DirectoryError(f"cannot create {d.name!r}: {exc}") from exc
    for d, _ in plan.update:
        users.update(d.name, groups=sorted(d.groups))
    for name in plan.enable:
        users.set_disabled(name, False)
    for name in plan.disable:
        users.set_disabled(name, True)


def sync_ldap(config: LdapConfig, users: UserDirectory, *, dry_run: bool = False) -> SyncPlan:
    """Read the directory and bring sparq's users in line (or only plan it, with dry_run)."""
    plan = plan_sync(read_directory(config), users)
    if not dry_run:
        apply_sync(plan, users)
    return plan
