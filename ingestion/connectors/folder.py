"""A folder tree (a local disk, a mounted share) as a source that syncs itself, with the file system's own
read permissions as each document's groups.

Who may read a file is what `getfacl` says about it: its group when the group may read it, plus the named
groups and named users of its POSIX ACL whose entries, masked by the ACL mask, grant read. The ACL is read
from the `system.posix_acl_access` extended attribute (no `acl` tools needed at run time); a file system
without extended attributes has no ACLs, and its mode bits say everything. Unix group names are sparq group
names unless `group_map` renames them; a named user `bob` becomes the group `user:bob`, which the sparq user
`bob` is implicitly in.

Deliberately not granted: "other" (a world-readable file gets no extra group: the source's configured
groups, added by the sync to every document, are the place for "everyone"), and the file's owner unless
`owner_reads` (an owner is often a service account, not a reader).

The folders above a file count too, as on POSIX: who cannot enter `hr/` cannot read `hr/payroll.txt`. A
document's groups are the file's read grants intersected with the "enter" (execute) grants of every folder
from the source root (included) down to the file's own folder, with the same getfacl semantics (owning
group, named groups and named users with x after the mask, the owner with x). A folder whose "other" may
enter restricts nothing. Each folder is read once per sync (one stat and one extended-attribute read).

Every sync lists the whole tree (one stat and one extended-attribute read per file and folder, no content
read): a change of permissions alone moves the ctime, not the mtime, so it is found by comparing the
groups, which the pipeline does for unchanged content without re-embedding it. No cursor is needed."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ingestion.connectors.base import (
    ChangeSet,
    Connector,
    RemoteDocument,
    SourceConfigError,
    SourceUnavailable,
)
from ingestion.sources import walk_files
from retrieval.access import user_group

GROUP_RULES = ("unix-group", "none")
ACL_XATTR = "system.posix_acl_access"

# The kernel's POSIX ACL extended attribute (linux/posix_acl_xattr.h): a little-endian u32 version (2), then
# 8-byte entries of u16 tag, u16 permissions, u32 uid or gid.
_ACL_VERSION = 2
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ACL_READ = 0x04
ACL_EXECUTE = 0x01
_NO_ACL = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}  # no ACL on this file / no xattrs on this fs


class AclFormatError(ValueError):
    """An ACL attribute that is not in the documented layout: nothing is granted from it."""


@dataclass(frozen=True)
class Grants:
    """Who holds one permission (read on a file, enter on a folder), as numeric ids: what the mode bits and
    the ACL grant, before any name lookup."""

    gids: frozenset[int]
    uids: frozenset[int]  # named ACL users
    owner: bool
    other: bool


@dataclass(frozen=True)
class ReadGrants(Grants):
    """Who may read a file."""

    @property
    def owner_reads(self) -> bool:
        """Whether the file's owner may read it (the owner is a user: `user:<name>`)."""
        return self.owner

    @property
    def other_reads(self) -> bool:
        """Whether anyone on the machine may read it (then the source's configured groups decide)."""
        return self.other


@dataclass(frozen=True)
class EnterGrants(Grants):
    """Who may enter (search, execute bit) a folder; `owner_uid` is the folder's owner."""

    owner_uid: int = -1

    def admit(self, gids: set[int], uids: set[int]) -> tuple[set[int], set[int]]:
        """The groups and users among `gids`/`uids` that may pass this folder."""
        if self.other:
            return gids, uids
        users = set(self.uids) | ({self.owner_uid} if self.owner else set())
        return gids & self.gids, uids & users


def parse_acl(raw: bytes) -> list[tuple[int, int, int]]:
    """The (tag, permissions, id) entries of a `system.posix_acl_access` value."""
    if len(raw) < _ACL_HEADER.size or (len(raw) - _ACL_HEADER.size) % _ACL_ENTRY.size:
        raise AclFormatError(f"ACL attribute of {len(raw)} bytes is not a header plus 8-byte entries")
    (version,) = _ACL_HEADER.unpack_from(raw)
    if version != _ACL_VERSION:
        raise AclFormatError(f"ACL attribute version {version}, expected {_ACL_VERSION}")
    return [_ACL_ENTRY.unpack_from(raw, off) for off in range(_ACL_HEADER.size, len(raw), _ACL_ENTRY.size)]


def _grants(path: Path, st: os.stat_result, acl_bit: int, mode_bits: tuple[int, int, int]) -> Grants:
    """Who holds permission `acl_bit` on `path` (stat `st`), with getfacl's effective permissions: named
    users, named groups and the owning group are limited by the mask. `mode_bits`: the (owner, group,
    other) mode bits of that permission, used when there is no ACL. Raises OSError when the ACL cannot be
    read, AclFormatError when it cannot be understood; a caller must then grant nothing rather than guess
    from the mode bits (with an ACL, the group bits are the mask, not the group's permission)."""
    raw: bytes | None = None
    if hasattr(os, "getxattr"):
        try:
            raw = os.getxattr(path, ACL_XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_ACL:
                raise
    if not raw:
        mode = st.st_mode
        usr, grp_bit, oth = mode_bits
        return Grants(
            gids=frozenset({st.st_gid}) if mode & grp_bit else frozenset(),
            uids=frozenset(),
            owner=bool(mode & usr),
            other=bool(mode & oth),
        )
    entries = parse_acl(raw)
    mask = next((perm for tag, perm, _ in entries if tag == ACL_MASK), 0o7)
    gids: set[int] = set()
    uids: set[int] = set()
    owner = other = False
    for tag, perm, ident in entries:
        if tag == ACL_USER_OBJ:
            owner = bool(perm & acl_bit)
        elif tag == ACL_OTHER:
            other = bool(perm & acl_bit)
        elif perm & mask & acl_bit:
            if tag == ACL_GROUP_OBJ:
                gids.add(st.st_gid)
            elif tag == ACL_GROUP:
                gids.add(ident)
            elif tag == ACL_USER:
                uids.add(ident)
    return Grants(frozenset(gids), frozenset(uids), owner, other)


def read_grants(path: Path, st: os.stat_result) -> ReadGrants:
    """Who may read the file `path` (see `_grants` for the errors it raises)."""
    g = _grants(path, st, ACL_READ, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))
    return ReadGrants(g.gids, g.uids, g.owner, g.other)


def enter_grants(path: Path, st: os.stat_result) -> EnterGrants:
    """Who may enter the folder `path` (see `_grants` for the errors it raises)."""
    g = _grants(path, st, ACL_EXECUTE, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH))
    return EnterGrants(g.gids, g.uids, g.owner, g.other, owner_uid=st.st_uid)


@dataclass
class _Names:
    """Numeric ids to names, looked up once per sync (a renamed group is seen at the next one); ids without a
    name are counted, to be reported once each."""

    groups: dict[int, str | None] = field(default_factory=dict)
    users: dict[int, str | None] = field(default_factory=dict)
    unnamed_gids: dict[int, int] = field(default_factory=dict)
    unnamed_uids: dict[int, int] = field(default_factory=dict)

    def group(self, gid: int) -> str | None:
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = None
        name = self.groups[gid]
        if name is None:
            self.unnamed_gids[gid] = self.unnamed_gids.get(gid, 0) + 1
        return name

    def user(self, uid: int) -> str | None:
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = None
        name = self.users[uid]
        if name is None:
            self.unnamed_uids[uid] = self.unnamed_uids.get(uid, 0) + 1
        return name

    def notes(self) -> list[str]:
        out = [
            f"group id {gid} may read {n} file(s) but has no name on this machine: not mapped to a sparq group"
            for gid, n in sorted(self.unnamed_gids.items())
        ]
        out += [
            f"user id {uid} may read {n} file(s) but has no name on this machine: not mapped to a sparq group"
            for uid, n in sorted(self.unnamed_uids.items())
        ]
        return out


class FolderConnector(Connector):
    """A folder tree read in place. `group_rule` "unix-group": documents carry the groups the file system
    lets read them; "none": no groups from the file system (the source's configured groups apply).
    `exclude`: folders never read (the caller passes sparq's data dir)."""

    kind = "folder"

    def __init__(
        self,
        path: str,
        group_rule: str = "unix-group",
        group_map: dict[str, str] | None = None,
        user_groups: bool = True,
        owner_reads: bool = False,
        exclude: Iterable[str] = (),
    ) -> None:
        if not isinstance(path, str) or not path.strip():
            raise SourceConfigError("folder source: a path is required")
        root = Path(path.strip()).expanduser()
        if not root.is_absolute():
            raise SourceConfigError(f"folder source: the path must be absolute, got {path!r}")
        if group_rule not in GROUP_RULES:
            raise SourceConfigError(
                f"folder source: group_rule must be one of {', '.join(GROUP_RULES)}, not {group_rule!r}"
            )
        mapping = dict(group_map or {})
        for unix, sparq in mapping.items():
            if not (isinstance(unix, str) and unix.strip() and isinstance(sparq, str) and sparq.strip()):
                raise SourceConfigError(
                    f"folder source: group_map entries must be non-empty names, got {unix!r} -> {sparq!r}"
                )
        self.group_rule = group_rule
        self.group_map = {k.strip(): v.strip() for k, v in mapping.items()}
        self.user_groups = bool(user_groups)
        self.owner_reads = bool(owner_reads)
        self.exclude = [Path(e) for e in exclude]
        # Resolved once: a link such as /mnt/share that later points elsewhere must not re-key the documents.
        self._root = root.resolve()

    @property
    def root_key(self) -> str:
        """The folder's path: every key of this source is a file path below it."""
        return str(self._root)

    def changes(self, cursor: str | None) -> ChangeSet:
        """Every file under the root with its permissions (the cursor is not used: see the module)."""
        root = self._root
        try:
            if not root.exists():
                raise SourceUnavailable(f"folder {root} does not exist (a share that is not mounted?)")
            listing = walk_files(root, exclude=self.exclude)
        except SourceUnavailable:
            raise
        except OSError as exc:  # a stale network mount, a folder sparq may not enter
            raise SourceUnavailable(f"cannot read folder {root}: {exc}") from exc
        unlisted = listing.unreadable_folders
        if root in unlisted:
            raise SourceUnavailable(
                f"cannot list folder {root}: permission denied or the share is unavailable"
            )
        notes = [f"{s.path}: {s.reason}" for s in listing.skipped]
        if unlisted:
            notes.append(
                f"{len(unlisted)} folder(s) could not be listed; their stored documents are kept, "
                "readable by admins only until they can be listed again"
            )
        names = _Names()
        folders: dict[Path, EnterGrants | None] = {}  # one stat and ACL read per folder and sync
        documents: list[RemoteDocument] = []
        present: set[str] = set()
        for path in listing.files:
            key = str(path)
            try:
                st = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since it was listed: gone
            except OSError as exc:
                present.add(key)  # there, but not readable now: its stored version is kept as it is
                notes.append(f"{path}: cannot stat: {exc}; left as stored")
                continue
            present.add(key)
            groups = self._groups(path, st, names, notes, folders)
            documents.append(
                RemoteDocument(
                    key=key,
                    size=st.st_size,
                    mtime=st.st_mtime,
                    extension=path.suffix.lower(),
                    fetch=path.read_bytes,
                    groups=groups,
                    path=key,
                )
            )
        notes.extend(names.notes())
        return ChangeSet(documents, present, cursor=None, notes=notes, unlisted=[str(p) for p in unlisted])

    def _groups(
        self,
        path: Path,
        st: os.stat_result,
        names: _Names,
        notes: list[str],
        folders: dict[Path, EnterGrants | None],
    ) -> tuple[str, ...] | None:
        if self.group_rule == "none":
            return None
        try:
            grants = read_grants(path, st)
        except (OSError, AclFormatError) as exc:
            # Fail closed: no group from the file system, only the source's configured groups.
            notes.append(
                f"{path}: cannot read its permissions ({exc}); only the source's configured groups "
                "may read it"
            )
            return ()
        gids = set(grants.gids)
        uids = set(grants.uids)
        if self.owner_reads and grants.owner_reads:
            uids.add(st.st_uid)
        for folder in self._folders_above(path):
            enter = self._enter(folder, folders, notes)
            if enter is None:
                return ()  # the folder's permissions are unknown: fail closed, as for the file's own
            gids, uids = enter.admit(gids, uids)
        out: set[str] = set()
        for gid in gids:
            name = names.group(gid)
            if name is not None:
                out.add(self.group_map.get(name, name))
        if self.user_groups:
            for uid in uids:
                name = names.user(uid)
                if name is not None:
                    out.add(user_group(name))
        return tuple(sorted(out))

    def _folders_above(self, path: Path) -> list[Path]:
        """The folders from the root (included) down to `path`'s own folder; none when the root is the file."""
        root = self._root
        if path == root:
            return []
        chain = [root]
        for part in path.parent.relative_to(root).parts:
            chain.append(chain[-1] / part)
        return chain

    @staticmethod
    def _enter(folder: Path, folders: dict[Path, EnterGrants | None], notes: list[str]) -> EnterGrants | None:
        """Who may enter `folder`, read once per sync; None (with a note, once) when it cannot be read."""
        if folder not in folders:
            try:
                folders[folder] = enter_grants(folder, os.stat(folder, follow_symlinks=False))
            except (OSError, AclFormatError) as exc:
                folders[folder] = None
                notes.append(
                    f"{folder}: cannot read its permissions ({exc}); files below it get only the source's "
                    "configured groups"
                )
        return folders[folder]
