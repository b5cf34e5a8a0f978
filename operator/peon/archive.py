"""The archive tool that backup and restore Jobs run: `peon archive create|restore|delete`.

An archive is a gzip-compressed tar of the data folder whose first member is a manifest
(`.peon-manifest.json`: when, how many files, how many bytes), with a sidecar `ARCHIVE.sha256`.
It keeps modes, numeric ownership, symlinks inside the tree, and empty files.

Safety, since a world is at stake:
- `create` writes to a temporary name in the same folder, fsyncs, then renames: an archive under
  its final name is always whole.
- `restore` verifies the checksum and checks every member before it touches the target; it
  refuses members that would land outside the target (`..`, absolute paths, links pointing
  out, writes through a link, device files). It then unpacks into a staging folder inside the
  target and only when that succeeded replaces the old contents, so a bad archive costs nothing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

MANIFEST = ".peon-manifest.json"
STAGING = ".peon-restore-staging"
CHUNK = 1 << 20


class ArchiveError(Exception):
    """An archive that cannot be trusted or used; the message says why."""


@dataclass
class Result:
    archive: str
    sha256: str
    size: int
    files: int
    bytes: int

    def json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through on its way to the file."""

    def __init__(self, f: BinaryIO):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def create(source: str, archive: str) -> Result:
    if not os.path.isdir(source):
        raise ArchiveError(f"{source} is not a folder")
    folder = os.path.dirname(os.path.abspath(archive)) or "."
    os.makedirs(folder, exist_ok=True)
    entries = sorted(_walk(source))
    files = sum(1 for _, st in entries if stat.S_ISREG(st.st_mode))
    total = sum(st.st_size for _, st in entries if stat.S_ISREG(st.st_mode))
    manifest = json.dumps({"format": 1, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                           "files": files, "bytes": total}).encode()
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".tar.gz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw:
            hw = _HashingWriter(raw)
            with tarfile.open(fileobj=hw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(manifest), 0o644, int(dt.datetime.now().timestamp())
                tar.addfile(info, io.BytesIO(manifest))
                for rel, _ in entries:
                    tar.add(os.path.join(source, rel), arcname=rel, recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, archive)
        digest = hw.h.hexdigest()
        _write_atomic(archive + ".sha256", f"{digest}  {os.path.basename(archive)}\n")
        _fsync_dir(folder)
        return Result(archive, digest, hw.n, files, total)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _walk(source: str):
    for root, dirs, names in os.walk(source, followlinks=False):
        for n in dirs + names:
            full = os.path.join(root, n)
            rel = os.path.relpath(full, source)
            if rel == MANIFEST or rel.split(os.sep)[0] == STAGING:
                continue
            yield rel, os.lstat(full)


def verify(archive: str, expected_sha256: str | None = None) -> str:
    """The archive's sha256, checked against `expected_sha256` and the sidecar file."""
    if not os.path.isfile(archive):
        raise ArchiveError(f"{archive} does not exist")
    digest = sha256_of(archive)
    sidecar = archive + ".sha256"
    wanted = [expected_sha256] if expected_sha256 else []
    if os.path.exists(sidecar):
        wanted.append(open(sidecar).read().split()[0])
    if not wanted:
        raise ArchiveError(f"no checksum to verify {archive} against")
    for w in wanted:
        if w.lower() != digest:
            raise ArchiveError(f"checksum mismatch for {archive}: expected {w}, got {digest}")
    return digest


def check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, checked to land inside the target; raises ArchiveError otherwise."""
    members = tar.getmembers()
    if not members or members[0].name != MANIFEST:
        raise ArchiveError("not a Peon archive: the manifest is missing")
    links: dict[str, str] = {}  # symlinks seen so far: a later member must not write through one
    for m in members[1:]:
        name = m.name
        if name.startswith("/") or _escapes(name):
            raise ArchiveError(f"refusing {name!r}: it would land outside the target")
        if m.isdev() or m.isfifo():
            raise ArchiveError(f"refusing {name!r}: device and fifo files are not restored")
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise ArchiveError(f"refusing {name!r}: it would be written through a link")
        if m.issym():
            target = m.linkname
            if target.startswith("/") or _escapes(posixpath.join(posixpath.dirname(name), target)):
                raise ArchiveError(f"refusing link {name!r} -> {target!r}: it points outside the target")
            links[name] = target
        elif m.islnk():
            if m.linkname.startswith("/") or _escapes(m.linkname):
                raise ArchiveError(f"refusing hard link {name!r} -> {m.linkname!r}: outside the target")
    return members[1:]


def _escapes(relpath: str) -> bool:
    norm = posixpath.normpath(relpath)
    return norm == ".." or norm.startswith("../")


def restore(archive: str, target: str, expected_sha256: str | None = None) -> Result:
    digest = verify(archive, expected_sha256)
    os.makedirs(target, exist_ok=True)
    staging = os.path.join(target, STAGING)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = check_members(tar)
            os.makedirs(staging)
            # Ownership is kept when running as root (numeric ids), modes always. Every member
            # was checked above; Pythons before 3.11.4 have no extraction filters at all.
            extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            tar.extractall(staging, members=members, numeric_owner=True, **extra)
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"cannot unpack {archive}: {e}") from e
    except ArchiveError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Only now is the old world replaced.
    for name in os.listdir(target):
        if name == STAGING:
            continue
        p = os.path.join(target, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    for name in os.listdir(staging):
        os.rename(os.path.join(staging, name), os.path.join(target, name))
    os.rmdir(staging)
    files = sum(1 for m in members if m.isreg())
    return Result(archive, digest, os.path.getsize(archive), files,
                  sum(m.size for m in members if m.isreg()))


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
