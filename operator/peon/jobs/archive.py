"""The archive tool that backup and restore Jobs run: `peon archive create|restore|delete`.

An archive is a gzip-compressed tar of the data folder whose first member is a manifest
(`.peon-manifest.json`: when, how many files, how many bytes, how many members), with a sidecar
`ARCHIVE.sha256`. It keeps modes, numeric ownership, symlinks inside the tree, and empty files.
The manifest counts `files` (regular files and hard links to them) and `bytes` (their sizes,
a hard link counting its file's size again), as archives have always done; restore holds the
archive to them exactly.

Create, which runs while the game may be writing its world:
- It writes to a temporary name in the same folder, fsyncs, then renames: an archive under its
  final name is always whole. The manifest is a fixed-size gzip member written as a placeholder
  and overwritten at the end, so it counts what was really archived.
- It walks the world with folder descriptors (`os.fwalk`) and opens files without following
  links, so a link swapped in during the walk cannot make it read outside the world.
- Skipped with a warning (in the result's `warnings`): fifos, sockets and devices; files and
  folders that vanish before they are read; names starting with `.peon-` at the top (Peon's
  own); links that are absolute or lead outside the world, and names that differ only by
  case or Unicode normalisation from one archived before them (restore would refuse them).
- The run fails with the reason: a file or folder that cannot be read (a backup that silently
  misses a file is worse than none), a file that shrinks while it is read.
- A file that grows or changes while it is read is archived as read, with a warning.

Restore, in three steps, none of which touches the current world until the last:
1. Check. The checksum, then a full pass over the archive without writing anything: every
   name normalised (no absolute paths, no `..`, no NUL, no empty name, no duplicate, nothing
   under the reserved top-level prefix `.peon-`); no two names, folders they imply included,
   that differ only by case or Unicode normalisation, nor a name part that folds to `.` or
   `..` (a case-insensitive or normalising filesystem takes them for one: there `s -> .`,
   `l -> S/S/../..`, `L/evil.txt` writes outside the target); only files, folders, symlinks
   and hard links; no member below a symlink member; every symlink resolved through all the
   archive's links and refused unless it stays inside, through no alias of another name; hard
   links only to a file earlier in the archive; sizes summed as they come and refused as soon
   as they pass the manifest's total; the manifest's counts checked exactly at the end. The
   decompressed stream is bounded by the manifest too, so an archive that inflates far beyond
   what it declares is stopped, not unpacked.
2. Stage. The new world is unpacked into `TARGET/.peon-staging-<random>`, a name no member can
   have, member by member through tarfile's `data` filter (where the Python has it) as a second
   guard, each member compared with what step 1 saw, then flushed to disk (syncfs).
3. Swap. The current world's top-level entries are renamed into `TARGET/.peon-old-<random>`,
   the staged ones renamed into TARGET, and only then is the old world deleted. A failed
   rename puts everything back. TARGET itself is never renamed: it is the volume's mount point.

Space: since the old world is kept until the new one is complete, a restore needs free space
for the whole new world (the archive's unpacked size, rounded up to blocks) next to the old
one; renames cost nothing. This is checked with `statvfs` before anything is unpacked, and a
restore that does not fit is refused with a clear error, the old world untouched. A volume
more than half full can be restored into as long as the new world fits in the free space.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import errno
import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import unicodedata
import zlib
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Iterator

MANIFEST = ".peon-manifest.json"
RESERVED = ".peon-"                   # top-level names only Peon may use
STAGING_PREFIX = ".peon-staging-"
OLD_PREFIX = ".peon-old-"
LEGACY_STAGING = ".peon-restore-staging"
CHUNK = 1 << 20
MANIFEST_SIZE = 512                   # the manifest is padded to this size (see _manifest_member)
MAX_MANIFEST = 64 << 10               # a larger manifest is not one of ours
MAX_METADATA = 64 << 10               # tarfile reads pax and long-name headers whole into memory
PER_MEMBER_ALLOWANCE = 16 << 10       # headers and padding one member may add to the stream
STREAM_SLACK = 1 << 20                # read-ahead and end-of-archive blocks
MAX_LINK_HOPS = 40                    # as the kernel's limit on following symlinks
NAME_MAX = 255
WARNINGS_IN_JSON = 8                  # the termination message holds 4 KiB
WARNING_CHARS = 240

REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class ArchiveError(Exception):
    """An archive that cannot be trusted or used, or a world that cannot be archived whole;
    the message says why."""


@dataclass
class Result:
    archive: str
    sha256: str
    size: int
    files: int
    bytes: int
    warnings: list[str] = field(default_factory=list)

    def json(self) -> str:
        out = dict(self.__dict__, warnings=_capped(self.warnings))
        return json.dumps(out, sort_keys=True)


def _capped(warnings: list[str]) -> list[str]:
    """The operator reads this JSON from a 4 KiB termination message: a few warnings, short;
    the full list is in the Job's log."""
    shown = [w if len(w) <= WARNING_CHARS else w[:WARNING_CHARS - 1] + "…"
             for w in warnings[:WARNINGS_IN_JSON]]
    if len(warnings) > WARNINGS_IN_JSON:
        shown.append(f"… and {len(warnings) - WARNINGS_IN_JSON} more (see the Job's log)")
    return shown


# --- names that alias ------------------------------------------------------------------------
# Links are checked by exact name, but a case-insensitive or normalising filesystem (vfat, NTFS,
# APFS, ext4 or ZFS with casefolding or normalisation) treats `L` as `l` and a composed `é` as a
# decomposed one: `s -> .`, `l -> S/S/../..`, `L/evil.txt` would then write outside the target.
# So no two names of an archive may differ only that way, whatever the filesystem at hand.

def _folded(part: str) -> str:
    """One name part as such a filesystem may compare it: Unicode's compatibility caseless
    match (NFKD(casefold(NFKD(casefold(NFD(part))))), D146), which folds case, composed and
    decomposed forms, and compatibility forms (`ﬀ`, full-width letters) alike."""
    norm = unicodedata.normalize
    return norm("NFKD", norm("NFKD", norm("NFD", part).casefold()).casefold())


def alias_key(path: str) -> str:
    """A normalised relative path as such a filesystem may compare it, part by part."""
    return "/".join(_folded(p) for p in path.split("/"))


def _reads_as_special(part: str) -> str | None:
    """What a name part that folds to `.`, `..` or one with a `/` reads as, else None."""
    folded = _folded(part)
    return folded if folded in (".", "..") or "/" in folded else None


def _is_reserved(top: str) -> bool:
    """A top-level name that is, or that such a filesystem would take for, one of Peon's."""
    return _folded(top).startswith(RESERVED)


def _differs_from(held: str) -> str:
    return (f"differs from {held!r} only by case or Unicode normalisation "
            "(the same name on a case-insensitive or normalising filesystem)")


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --- create ----------------------------------------------------------------------------------

@dataclass
class _Counts:
    """What has really gone into the archive; the manifest is written from this."""
    files: int = 0
    bytes: int = 0
    entries: int = 0


def create(source: str, archive: str) -> Result:
    if not os.path.isdir(source):
        raise ArchiveError(f"{source} is not a folder")
    source = os.path.realpath(source)  # fwalk would not enter a top folder given as a link
    folder = os.path.dirname(os.path.abspath(archive)) or "."
    os.makedirs(folder, exist_ok=True)
    created = dt.datetime.now(dt.timezone.utc)
    warnings: list[str] = []
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".tar.gz", dir=folder)
    try:
        with os.fdopen(fd, "w+b") as raw:
            placeholder = _manifest_member(created, _Counts())
            raw.write(placeholder)
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=int(created.timestamp())) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    counts = _archive_world(tar, source, warnings)
            manifest = _manifest_member(created, counts)
            if len(manifest) != len(placeholder):  # cannot happen: both are fixed-size
                raise ArchiveError("internal error: the manifest changed size")
            raw.seek(0)
            raw.write(manifest)
            raw.flush()
            os.fsync(raw.fileno())
        digest = sha256_of(tmp)  # what is on disk, read back
        size = os.path.getsize(tmp)
        os.replace(tmp, archive)
        _write_atomic(archive + ".sha256", f"{digest}  {os.path.basename(archive)}\n")
        _fsync_dir(folder)
        return Result(archive, digest, size, counts.files, counts.bytes, warnings)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _manifest_member(created: dt.datetime, counts: _Counts) -> bytes:
    """The manifest as a tar member in a gzip member of its own, always the same length, so that
    the placeholder written first can be overwritten in place once the counts are known. A file
    of concatenated gzip members is one stream to gzip, tar and Python alike."""
    body = json.dumps({"format": 1, "created": created.isoformat(), "files": counts.files,
                       "bytes": counts.bytes, "entries": counts.entries}).encode()
    info = tarfile.TarInfo(MANIFEST)
    info.size, info.mode, info.mtime = MANIFEST_SIZE, 0o644, int(created.timestamp())
    block = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + body.ljust(MANIFEST_SIZE)
    # Level 0 stores the bytes: the member's length depends only on theirs.
    return gzip.compress(block, compresslevel=0, mtime=int(created.timestamp()))


def _archive_world(tar: tarfile.TarFile, source: str, warnings: list[str]) -> _Counts:
    """Folders and files as the walk finds them, then the links that restore would accept."""
    counts = _Counts()
    first_name: dict[tuple[int, int], tuple[str, int]] = {}  # (dev, inode) -> (name, size)
    links: dict[str, tuple[str, os.stat_result]] = {}
    unreadable: list[OSError] = []
    unvisited: set[str] = set()  # folders listed but not yet entered
    spellings: dict[str, str] = {}  # alias_key -> the name kept under it

    def on_error(e: OSError) -> None:
        if not isinstance(e, FileNotFoundError):  # a vanished folder stays in `unvisited`
            unreadable.append(e)

    for root, dirs, names, root_fd in os.fwalk(source, follow_symlinks=False, onerror=on_error):
        _fail_on_unreadable(unreadable)
        rel_root = os.path.relpath(root, source)
        if rel_root != ".":
            unvisited.discard(rel_root)
            _add_header(tar, _header(rel_root, os.fstat(root_fd), tarfile.DIRTYPE), counts)
        subdirs = []
        for name in sorted(dirs + names):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if rel_root == "." and _is_reserved(name):
                warnings.append(f"skipped {rel!r}: names starting with {RESERVED!r} are Peon's own")
                continue
            st = _lstat(name, root_fd, rel, warnings)
            if st is None:
                continue
            if _kept_kind(st.st_mode) and not _spelled_once(rel, spellings, warnings):
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
                unvisited.add(rel)
            elif stat.S_ISREG(st.st_mode):
                _add_file(tar, name, root_fd, rel, counts, first_name, warnings)
            elif stat.S_ISLNK(st.st_mode):
                links[rel] = (_readlink(name, root_fd, rel), st)
            else:
                warnings.append(f"skipped {rel!r}: a {_kind_of(st.st_mode)} is not archived")
        dirs[:] = subdirs  # fwalk descends into these only, in this order
    _fail_on_unreadable(unreadable)
    # fwalk does not enter a folder that vanished or was swapped for a link after it was listed
    warnings.extend(f"skipped folder {rel!r}: it vanished or changed while it was archived"
                    for rel in sorted(unvisited))
    kept = _links_to_keep({r: t for r, (t, _) in links.items()}, warnings, spellings)
    for rel, target in sorted(kept.items()):
        _add_header(tar, _header(rel, links[rel][1], tarfile.SYMTYPE, linkname=target), counts)
    return counts


def _kept_kind(mode: int) -> bool:
    return stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _spelled_once(rel: str, spellings: dict[str, str], warnings: list[str]) -> bool:
    """Whether `rel` can go into the archive as the only name of its alias key. A world on a
    case-sensitive volume may hold `Save` and `save`; restore would refuse the archive, so the
    first (in sorted order) is kept and the other skipped with a warning."""
    special = _reads_as_special(rel.rsplit("/", 1)[-1])
    if special is not None:
        warnings.append(f"skipped {rel!r}: its name reads as {special!r} on a normalising "
                        "filesystem, which restore refuses")
        return False
    held = spellings.setdefault(alias_key(rel), rel)
    if held != rel:
        warnings.append(f"skipped {rel!r}: it {_differs_from(held)}, which restore refuses")
        return False
    return True


def _fail_on_unreadable(errors: list[OSError]) -> None:
    if errors:
        e = errors[0]
        raise ArchiveError(f"cannot read folder {e.filename!r}: {e.strerror}; "
                           "the backup would miss what is in it")


def _lstat(name: str, dir_fd: int, rel: str, warnings: list[str]) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        warnings.append(f"skipped {rel!r}: it vanished before it was read")
        return None
    except OSError as e:
        raise ArchiveError(f"cannot read {rel!r}: {e.strerror}") from e


def _readlink(name: str, dir_fd: int, rel: str) -> str:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as e:
        raise ArchiveError(f"cannot read link {rel!r}: {e.strerror}") from e


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _header(rel: str, st: os.stat_result, kind: bytes, size: int = 0,
            linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.type, info.size, info.linkname = kind, size, linkname
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, st.st_mtime
    return info


def _add_header(tar: tarfile.TarFile, info: tarfile.TarInfo, counts: _Counts) -> None:
    tar.addfile(info)
    counts.entries += 1


def _open_world_file(name: str, dir_fd: int) -> int:
    """Without following a link, nor blocking on a fifo, that replaced the file since the walk
    listed it."""
    return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)


class _WorldFile:
    """A world file on its way into the archive: exactly the size its header declares, or an
    error, since a short member would make the archive unreadable from there on."""

    def __init__(self, fd: int, rel: str, size: int):
        self.fd, self.rel, self.size, self.left = fd, rel, size, size

    def read(self, n: int) -> bytes:
        want = min(n, self.left)
        parts = []
        while want:
            try:
                chunk = os.read(self.fd, want)
            except OSError as e:
                raise ArchiveError(f"cannot read {self.rel!r}: {e.strerror}") from e
            if not chunk:
                raise ArchiveError(
                    f"{self.rel!r} shrank while it was read ({self.size - self.left} of "
                    f"{self.size} bytes): the game was writing it; back up again, or stop the "
                    "server first")
            parts.append(chunk)
            want -= len(chunk)
            self.left -= len(chunk)
        return b"".join(parts)


def _add_file(tar: tarfile.TarFile, name: str, dir_fd: int, rel: str, counts: _Counts,
              first_name: dict[tuple[int, int], tuple[str, int]], warnings: list[str]) -> None:
    try:
        fd = _open_world_file(name, dir_fd)
    except FileNotFoundError:
        warnings.append(f"skipped {rel!r}: it vanished before it was read")
        return
    except OSError as e:
        if e.errno == errno.ELOOP:
            warnings.append(f"skipped {rel!r}: it was replaced by a link while it was archived")
            return
        raise ArchiveError(f"cannot read {rel!r}: {e.strerror}; the backup would miss it") from e
    try:
        st = os.fstat(fd)  # what was opened, not what was listed
        if not stat.S_ISREG(st.st_mode):
            warnings.append(f"skipped {rel!r}: it was replaced by a {_kind_of(st.st_mode)}")
            return
        inode = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and inode in first_name:
            target, size = first_name[inode]
            _add_header(tar, _header(rel, st, tarfile.LNKTYPE, linkname=target), counts)
            counts.files += 1
            counts.bytes += size
            return
        tar.addfile(_header(rel, st, tarfile.REGTYPE, size=st.st_size), _WorldFile(fd, rel, st.st_size))
        counts.entries += 1
        counts.files += 1
        counts.bytes += st.st_size
        if st.st_nlink > 1:
            first_name[inode] = (rel, st.st_size)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            warnings.append(f"{rel!r} changed while it was read: archived as read, its copy "
                            "may mix old and new contents")
    finally:
        os.close(fd)


def _links_to_keep(links: dict[str, str], warnings: list[str],
                   spellings: dict[str, str]) -> dict[str, str]:
    """The links restore will accept: relative, and leading inside the world through the other
    kept links, through no alias of another name. Dropping one can change where another leads,
    so repeat until none changes."""
    kept = {}
    for rel, target in links.items():
        if os.path.isabs(target):
            warnings.append(f"skipped link {rel!r} -> {target!r}: absolute links are not archived")
        else:
            kept[rel] = target
    while True:
        problems = {rel: _link_problem(rel, kept[rel], kept, spellings) for rel in sorted(kept)}
        if not any(problems.values()):
            return kept
        for rel, problem in problems.items():
            if problem:
                reason = "it leads outside the world" if problem == OUTSIDE else problem
                warnings.append(f"skipped link {rel!r} -> {kept.pop(rel)!r}: {reason}")


OUTSIDE = "it points outside the target, or loops"


def _link_problem(name: str, target: str, links: dict[str, str],
                  spellings: dict[str, str]) -> str | None:
    """Why the link `name` -> `target` is unsafe, or None: whether it resolves inside the root,
    following the other links in `links` as the kernel would (a link's target is read from the
    link's folder, `..` after a link is taken from where the link led); loops count as outside.
    A step whose path is an alias of another name in `spellings` (alias_key -> name) is unsafe
    too: on a case-insensitive or normalising filesystem it would reach that name, perhaps a
    link this walk did not follow."""
    here = name.split("/")[:-1]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return OUTSIDE
            here.pop()
            continue
        special = _reads_as_special(part)
        if special is not None:
            return f"its part {part!r} reads as {special!r} on a normalising filesystem"
        here.append(part)
        path = "/".join(here)
        held = spellings.get(alias_key(path), path)
        if held != path:
            return f"it passes through {path!r}, which {_differs_from(held)}"
        if path in links:
            hops += 1
            next_target = links[path]
            if hops > MAX_LINK_HOPS or next_target.startswith("/"):
                return OUTSIDE
            here.pop()
            pending = next_target.split("/") + pending
    return None


# --- verify ----------------------------------------------------------------------------------

def verify(archive: str, expected_sha256: str | None = None) -> str:
    """The archive's sha256, checked against `expected_sha256` and the sidecar file."""
    if not os.path.isfile(archive):
        raise ArchiveError(f"{archive} does not exist")
    digest = sha256_of(archive)
    sidecar = archive + ".sha256"
    wanted = [expected_sha256] if expected_sha256 else []
    if os.path.exists(sidecar):
        with open(sidecar, errors="replace") as f:
            words = f.read().split()
        if not words:
            raise ArchiveError(f"the checksum file {sidecar} is empty")
        wanted.append(words[0])
    if not wanted:
        raise ArchiveError(f"no checksum to verify {archive} against")
    for w in wanted:
        if w.lower() != digest:
            raise ArchiveError(f"checksum mismatch for {archive}: expected {w}, got {digest}")
    return digest


# --- restore, step 1: check ------------------------------------------------------------------

@dataclass(frozen=True)
class _Seen:
    """A member as it is in the archive; step 2 must meet the same ones in the same order."""
    raw_name: str
    type: bytes
    size: int
    raw_link: str
    name: str       # normalised
    link: str       # normalised for hard links, as stored for symlinks


# Room an archive from before `entries` gets beyond its declared bytes (see _Manifest).
OLD_FORMAT_SLACK = 16 << 20


@dataclass
class _Manifest:
    files: int
    bytes: int
    entries: int | None  # archives made before it was counted have none

    @property
    def exact(self) -> bool:
        """Archives made since `entries` was counted declare exactly what they hold. Older ones
        took their byte count before reading the files, so a live world's growing file made
        them hold a little more: they get room, still bounded, and the space check counts what
        they really hold."""
        return self.entries is not None

    @property
    def byte_limit(self) -> int:
        return self.bytes if self.exact else self.bytes + self.bytes // 10 + OLD_FORMAT_SLACK


@dataclass
class _Plan:
    """What step 1 learned."""
    manifest: _Manifest
    members: list[_Seen]

    def disk_bytes(self, block: int) -> int:
        """Room the new world takes: its files rounded up to blocks, a block per folder."""
        files = sum(-(-m.size // block) * block for m in self.members if m.type in REGULAR_TYPES)
        return files + block * sum(1 for m in self.members if m.type == tarfile.DIRTYPE)


class _BoundedStream:
    """The decompressed archive, refused past what the manifest allows: its bytes plus a
    little per member for headers. An archive that inflates beyond that is stopped here."""

    def __init__(self, raw: Any):
        self.gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self.read_so_far = 0
        self.allowed = STREAM_SLACK + PER_MEMBER_ALLOWANCE  # enough for the manifest

    def allow(self, data_bytes: int, members: int) -> None:
        self.allowed = data_bytes + (members + 1) * PER_MEMBER_ALLOWANCE + STREAM_SLACK

    def read(self, n: int = -1) -> bytes:
        data = self.gz.read(n if n is not None and n >= 0 else CHUNK)
        self.read_so_far += len(data)
        if self.read_so_far > self.allowed:
            raise ArchiveError(f"the archive inflates beyond what its manifest declares "
                               f"(more than {self.allowed} bytes unpacked)")
        return data


class _Member(tarfile.TarInfo):
    """tarfile reads a pax or long-name header whole into memory: refuse a big one first."""

    def _proc_member(self, tar):  # type: ignore[no-untyped-def]
        if self.type in HEADER_TYPES and self.size > MAX_METADATA:
            raise ArchiveError(f"refusing a {self.size}-byte metadata header: "
                               f"more than {MAX_METADATA} bytes")
        return super()._proc_member(tar)


def _open_stream(raw: Any) -> tuple[_BoundedStream, tarfile.TarFile]:
    stream = _BoundedStream(raw)
    # Stream mode: one pass front to back, no seeking, members read as they come.
    tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member, errorlevel=2)
    return stream, tar


def _read_manifest(tar: tarfile.TarFile, members: Iterator[tarfile.TarInfo]) -> _Manifest:
    first = next(members, None)
    if first is None or _normalised(first.name) != MANIFEST:
        raise ArchiveError("not a Peon archive: the manifest is missing")
    if not first.isreg() or first.size > MAX_MANIFEST:
        raise ArchiveError("not a Peon archive: the manifest is not a small file")
    f = tar.extractfile(first)
    try:
        doc = json.loads(f.read() if f else b"")
    except (ValueError, RecursionError) as e:  # "[[[[..." nests past the parser's depth
        raise ArchiveError(f"the manifest is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ArchiveError("the manifest is not valid: not an object")
    entries = _count(doc, "entries") if doc.get("entries") is not None else None
    return _Manifest(_count(doc, "files"), _count(doc, "bytes"), entries)


def _count(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:  # bool is an int, but not a count
        raise ArchiveError(f"the manifest is not valid: {key!r} must be a count, got {value!r}")
    return value


def _normalised(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


class _Checker:
    """Step 1's rules, member by member, then for the whole archive."""

    FILE, DIR, IMPLIED_DIR, SYMLINK, HARDLINK = "file", "folder", "implied folder", "link", "hard link"

    def __init__(self, manifest: _Manifest):
        self.manifest = manifest
        self.kinds: dict[str, str] = {}
        self.spellings: dict[str, str] = {}  # alias_key -> the name (or folder) it is had as
        self.file_sizes: dict[str, int] = {}
        self.symlinks: dict[str, str] = {}
        self.seen: list[_Seen] = []
        self.stored_bytes = 0
        self.files = 0
        self.apparent_bytes = 0

    def add(self, m: tarfile.TarInfo) -> _Seen:
        name = self._name(m.name)
        kind = self._kind(m)
        if kind != self.FILE and m.size:
            raise ArchiveError(f"refusing {m.name!r}: a {kind} member carrying data")
        self._claim(m.name, name, kind)
        link = m.linkname
        if kind == self.SYMLINK:
            self._check_symlink(m.name, link)
            self.symlinks[name] = link
        elif kind == self.HARDLINK:
            link = self._check_hardlink(m.name, link)
            self.files += 1
            self.apparent_bytes += self.file_sizes[link]
        elif kind == self.FILE:
            self.file_sizes[name] = m.size
            self.files += 1
            self.stored_bytes += m.size
            self.apparent_bytes += m.size
            if self.stored_bytes > self.manifest.byte_limit:
                raise ArchiveError(f"refusing {m.name!r}: the archive holds more than the "
                                   f"{self.manifest.byte_limit} bytes its manifest allows")
        seen = _Seen(m.name, m.type, m.size, m.linkname, name, link)
        self.seen.append(seen)
        if self.manifest.entries is not None and len(self.seen) > self.manifest.entries:
            raise ArchiveError(f"the archive holds more than the {self.manifest.entries} "
                               "members its manifest declares")
        return seen

    def finish(self) -> None:
        for name, target in self.symlinks.items():
            # resolved through all the archive's links: `s -> .`, `l -> s/s/../..` is out,
            # and so is `l -> S/S/../..` (an alias of `s`)
            problem = _link_problem(name, target, self.symlinks, self.spellings)
            if problem:
                raise ArchiveError(f"refusing link {name!r} -> {target!r}: {problem}")
        m = self.manifest
        bytes_ok = self.apparent_bytes == m.bytes if m.exact else self.apparent_bytes <= m.byte_limit
        if self.files != m.files or not bytes_ok or m.entries not in (None, len(self.seen)):
            raise ArchiveError(
                f"the manifest does not match the archive: it declares {m.files} files, "
                f"{m.bytes} bytes" + ("" if m.entries is None else f", {m.entries} members") +
                f"; the archive holds {self.files} files, {self.apparent_bytes} bytes, "
                f"{len(self.seen)} members")

    def _name(self, raw: str) -> str:
        if "\x00" in raw:
            raise ArchiveError(f"refusing {raw!r}: a name with a NUL byte")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if raw.startswith("/") or ".." in parts:
            raise ArchiveError(f"refusing {raw!r}: it would land outside the target")
        if not parts:
            raise ArchiveError(f"refusing {raw!r}: an empty name")
        if _is_reserved(parts[0]):
            raise ArchiveError(f"refusing {raw!r}: top-level names starting with {RESERVED!r} "
                               "are reserved for Peon")
        if any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
            raise ArchiveError(f"refusing {raw!r}: a name part longer than {NAME_MAX} bytes")
        for p in parts:
            special = _reads_as_special(p)
            if special is not None:
                raise ArchiveError(f"refusing {raw!r}: its part {p!r} reads as {special!r} on "
                                   "a normalising filesystem")
        return "/".join(parts)

    def _kind(self, m: tarfile.TarInfo) -> str:
        if m.type in REGULAR_TYPES:
            return self.FILE
        if m.type == tarfile.DIRTYPE:
            return self.DIR
        if m.type == tarfile.SYMTYPE:
            return self.SYMLINK
        if m.type == tarfile.LNKTYPE:
            return self.HARDLINK
        what = "fifo" if m.isfifo() else "device" if m.isdev() else "sparse or unknown"
        raise ArchiveError(f"refusing {m.name!r}: a {what} member; device, fifo and other "
                           "special files are not restored")

    def _claim(self, raw: str, name: str, kind: str) -> None:
        """A name is had once; its folders must be folders, and none of them a link."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder not in self.kinds:  # a folder had already was checked when first had
                self._spelled_once(raw, folder)
            held = self.kinds.setdefault(folder, self.IMPLIED_DIR)
            if held == self.SYMLINK:
                raise ArchiveError(f"refusing {raw!r}: it would be written through a link ({folder!r})")
            if held not in (self.DIR, self.IMPLIED_DIR):
                raise ArchiveError(f"refusing {raw!r}: its folder {folder!r} is a {held} in the archive")
        self._spelled_once(raw, name)
        held = self.kinds.get(name)
        if held is not None and not (held == self.IMPLIED_DIR and kind == self.DIR):
            raise ArchiveError(f"refusing {raw!r}: {name!r} appears twice in the archive "
                               f"(as a {held}, then as a {kind})")
        self.kinds[name] = kind

    def _spelled_once(self, raw: str, path: str) -> None:
        """No two names (or folders they imply) may be one name where case or Unicode
        normalisation does not count: `L/evil.txt` would go through a link `l` there."""
        held = self.spellings.setdefault(alias_key(path), path)
        if held != path:
            raise ArchiveError(f"refusing {raw!r}: {path!r} {_differs_from(held)}")

    def _check_symlink(self, raw: str, target: str) -> None:
        if "\x00" in target or not target:
            raise ArchiveError(f"refusing link {raw!r} -> {target!r}: an empty target or one with a NUL byte")
        if target.startswith("/"):
            raise ArchiveError(f"refusing link {raw!r} -> {target!r}: it points outside the target")

    def _check_hardlink(self, raw: str, target: str) -> str:
        parts = [p for p in target.split("/") if p not in ("", ".")]
        if "\x00" in target or target.startswith("/") or ".." in parts or not parts:
            raise ArchiveError(f"refusing hard link {raw!r} -> {target!r}: "
                               "it would land outside the target")
        name = "/".join(parts)
        if self.kinds.get(name) != self.FILE:
            raise ArchiveError(f"refusing hard link {raw!r} -> {target!r}: a hard link must "
                               "point to a file earlier in the archive")
        return name


def _check(archive: str, target: str) -> _Plan:
    """Step 1: the whole archive read and checked, nothing written."""
    try:
        with open(archive, "rb") as raw:
            stream, tar = _open_stream(raw)
            with tar:
                members = iter(tar)
                manifest = _read_manifest(tar, members)
                check_space_for(target, manifest.bytes)
                checker = _Checker(manifest)
                stream.allow(manifest.byte_limit, 0)
                for m in members:
                    seen = checker.add(m)
                    stream.allow(manifest.byte_limit, len(checker.seen))
                    if seen.type in REGULAR_TYPES:
                        _read_through(tar, m)
                checker.finish()
    except ArchiveError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, RecursionError,
            OverflowError) as e:
        raise ArchiveError(f"cannot read {archive}: {e}") from e
    return _Plan(manifest, checker.seen)


def _read_through(tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
    """A member's data, read and dropped: a truncated archive fails here, before any write."""
    f = tar.extractfile(m)
    if f is None:
        return
    while f.read(CHUNK):
        pass


# --- restore, step 2: stage ------------------------------------------------------------------

@dataclass
class _Space:
    free_bytes: int
    free_inodes: int | None  # None where the filesystem does not count them
    block: int


def _free_space(path: str) -> _Space:
    st = os.statvfs(path)
    return _Space(st.f_bavail * st.f_frsize, st.f_favail if st.f_files else None, st.f_frsize or 4096)


def _existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _not_enough_space(target: str, need: int, free: int) -> ArchiveError:
    return ArchiveError(f"not enough space in {target}: the new world needs {_mib(need)}, "
                        f"{_mib(free)} are free (the current world is kept until the new one "
                        "is complete, so both must fit)")


def check_space_for(target: str, data_bytes: int) -> None:
    """Refuse, before anything is written, a new world of `data_bytes` that does not fit beside
    the old one (an archive's manifest, a snapshot's restore size)."""
    space = _free_space(_existing(target))
    if data_bytes > space.free_bytes:
        raise _not_enough_space(target, data_bytes, space.free_bytes)


def _check_space(target: str, plan: _Plan) -> None:
    space = _free_space(target)
    need = plan.disk_bytes(space.block)
    if need > space.free_bytes:
        raise _not_enough_space(target, need, space.free_bytes)
    if space.free_inodes is not None and len(plan.members) > space.free_inodes:
        raise ArchiveError(f"not enough inodes in {target}: the new world has "
                           f"{len(plan.members)} entries, {space.free_inodes} are free")


def _kept_mode(m: tarfile.TarInfo) -> int:
    """The member's mode, less what is unsafe with owners restored as root: set-user and
    set-group bits on files. Folders keep set-group (volumes with an fsGroup use it)."""
    if m.isdir():
        return m.mode & 0o3777
    return m.mode & 0o777


def _restore_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's `data` filter as a second guard (it refuses absolute names, names and links
    that resolve outside `dest` through what is already there, and special files), keeping
    what a world needs that it would drop: owners, and modes beyond 0o755."""
    checked = tarfile.data_filter(member, dest)
    if member.issym():
        return checked.replace(uid=member.uid, gid=member.gid, deep=False)
    return checked.replace(uid=member.uid, gid=member.gid, uname=member.uname,
                           gname=member.gname, mode=_kept_mode(member), deep=False)


def _to_extract(tar: tarfile.TarFile, plan: _Plan) -> Iterator[tarfile.TarInfo]:
    """The members again, each the same as in step 1, the bytes to write capped at the
    manifest's total."""
    members = iter(tar)
    next(members, None)  # the manifest
    written = count = 0
    for m in members:
        if count >= len(plan.members) or _signature(m) != _signature_of(plan.members[count]):
            raise ArchiveError("the archive changed between checking and unpacking")
        seen = plan.members[count]
        count += 1
        if m.isreg():
            written += m.size
            if written > plan.manifest.byte_limit:
                raise ArchiveError("the archive writes more than its manifest declares")
        # Safe modes here too, for Pythons without the data filter (Debian bookworm's 3.11.2,
        # the operator image's, has neither it nor TarInfo.replace): set in place.
        m.name, m.linkname = seen.name, seen.link
        if not m.issym():
            m.mode = _kept_mode(m)
        yield m
    if count != len(plan.members):
        raise ArchiveError("the archive changed between checking and unpacking")


def _signature(m: tarfile.TarInfo) -> tuple[str, bytes, int, str]:
    return (m.name, m.type, m.size, m.linkname)


def _signature_of(seen: _Seen) -> tuple[str, bytes, int, str]:
    return (seen.raw_name, seen.type, seen.size, seen.raw_link)


def _stage(archive: str, staging: str, plan: _Plan) -> None:
    """Step 2: unpack into `staging`; the caller removes it on any failure."""
    guard = {"filter": _restore_filter} if hasattr(tarfile, "data_filter") else {}
    try:
        with open(archive, "rb") as raw:
            stream, tar = _open_stream(raw)
            stream.allow(plan.manifest.byte_limit, len(plan.members))
            with tar:
                # Owners are kept when running as root (numeric ids); folders get their modes
                # and times at the end, so a read-only folder can still be filled.
                tar.extractall(staging, members=_to_extract(tar, plan), numeric_owner=True, **guard)
    except ArchiveError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, RecursionError,
            OverflowError) as e:
        raise ArchiveError(f"cannot unpack {archive}: {e}") from e


# --- restore, step 3: swap -------------------------------------------------------------------

def _world_names(target: str) -> list[str]:
    return sorted(n for n in os.listdir(target) if not n.startswith(RESERVED))


def clear_leftovers(target: str) -> list[str]:
    """Staging folders of restores that died are dropped; an old world they had moved aside
    is kept, and said, since it may be the only copy of something."""
    warnings = []
    for name in sorted(os.listdir(target)):
        path = os.path.join(target, name)
        if name.startswith(STAGING_PREFIX) or name == LEGACY_STAGING:
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(OLD_PREFIX):
            warnings.append(f"{path} is left over from an interrupted restore; "
                            "remove it when it is not needed")
    return warnings


def swap_in(target: str, staging: str) -> list[str]:
    """Step 3: the old world's entries renamed aside, the new ones renamed in, the old deleted.
    Renames within the volume are cheap and, with put-back on failure, all or nothing."""
    old = tempfile.mkdtemp(prefix=OLD_PREFIX, dir=target)
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in _world_names(target):
            os.rename(os.path.join(target, name), os.path.join(old, name))
            moved_out.append(name)
        for name in sorted(os.listdir(staging)):
            os.rename(os.path.join(staging, name), os.path.join(target, name))
            moved_in.append(name)
    except OSError as e:
        _put_back(target, staging, old, moved_out, moved_in)
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"cannot put the new world in place: {e}; the old world is back") from e
    _fsync_dir(target)
    os.rmdir(staging)
    try:
        shutil.rmtree(old)
    except OSError as e:
        return [f"the new world is in place, but the old one could not be removed from {old}: {e}"]
    return []


def _put_back(target: str, staging: str, old: str, moved_out: list[str], moved_in: list[str]) -> None:
    try:
        for name in reversed(moved_in):
            os.rename(os.path.join(target, name), os.path.join(staging, name))
        for name in reversed(moved_out):
            os.rename(os.path.join(old, name), os.path.join(target, name))
        os.rmdir(old)
    except OSError as e:
        raise ArchiveError(f"cannot put the new world in place, nor the old one back: {e}; "
                           f"the old world is in {old}, the new one in {staging}") from e


def restore(archive: str, target: str, expected_sha256: str | None = None) -> Result:
    """Replace TARGET's contents with the archive's world: check, stage, swap (see above)."""
    digest = verify(archive, expected_sha256)
    target = os.path.abspath(target)
    plan = _check(archive, target)
    try:
        os.makedirs(target, exist_ok=True)
        warnings = clear_leftovers(target)
        _check_space(target, plan)
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target)
    except OSError as e:
        raise ArchiveError(f"cannot prepare {target}: {e}") from e
    try:
        _stage(archive, staging, plan)
        sync_volume(staging)  # the new world on disk before the old one goes
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    warnings += swap_in(target, staging)
    return Result(archive, digest, os.path.getsize(archive), plan.manifest.files,
                  plan.manifest.bytes, warnings)


def sync_volume(path: str) -> None:
    """tarfile does not fsync what it writes. syncfs(2) flushes the one volume; where it is
    missing, sync(2) flushes them all."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    finally:
        os.close(fd)
    os.sync()


BACKGROUND_SYNC_SECONDS = 0.5


@contextmanager
def syncing_in_the_background(path: str, every: float = BACKGROUND_SYNC_SECONDS) -> Iterator[None]:
    """While the body writes a world under PATH, flush PATH's volume every EVERY seconds, so the
    sync that must follow (before a swap) finds little left: the disk writes while the store is
    still being read, not after it (bench/store.py: the final sync of a 1 GiB restore went from
    0.6 s to nothing). A flush that fails here is left to that final sync to report."""
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(every):
            try:
                sync_volume(path)
            except OSError:
                pass

    flusher = threading.Thread(target=flush, name="background-sync", daemon=True)
    flusher.start()
    try:
        yield
    finally:
        stop.set()
        flusher.join()


def delete(archive: str) -> bool:
    """Remove an archive and its sidecar; True when there was one."""
    found = False
    for p in (archive, archive + ".sha256"):
        if os.path.exists(p):
            os.unlink(p)
            found = True
    return found


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.partial"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
