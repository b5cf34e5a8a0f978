"""The archive tool on real files: round trips bit for bit, hostile archives refused."""
import hashlib
import io
import json
import os
import time
import stat
import subprocess
import sys
import tarfile

import pytest

from peon.jobs import archive
from peon.jobs.archive import MANIFEST, ArchiveError


def tree(root):
    """path -> (kind, sha256 or link target, mode, uid, gid) for everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), None, st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            else:
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@pytest.fixture
def world(tmp_path):
    src = tmp_path / "world"
    (src / "worlds_local" / "deep" / "deeper").mkdir(parents=True)
    (src / "worlds_local" / "Midgard.db").write_bytes(os.urandom(4096))
    (src / "worlds_local" / "deep" / "deeper" / "notes.txt").write_text("skål\n")
    (src / "empty.txt").write_bytes(b"")
    big = src / "big.bin"
    with open(big, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))  # 24 MiB: more than one compression block
    script = src / "start.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    (src / "secret.cfg").write_text("x")
    (src / "secret.cfg").chmod(0o600)
    (src / "worlds_local" / "deep").chmod(0o711)
    os.symlink("worlds_local/Midgard.db", src / "current.db")
    os.symlink("../notes.txt", src / "worlds_local" / "deep" / "deeper" / "up.txt")
    if os.geteuid() == 0:
        os.chown(src / "secret.cfg", 1234, 5678)
    return src


def test_round_trip_is_bit_for_bit(world, tmp_path):
    arc = tmp_path / "backups" / "b1.tar.gz"
    res = archive.create(str(world), str(arc))
    assert arc.exists() and res.size == arc.stat().st_size
    assert res.sha256 == hashlib.sha256(arc.read_bytes()).hexdigest()
    assert (tmp_path / "backups" / "b1.tar.gz.sha256").read_text().split()[0] == res.sha256
    assert res.files == 6
    assert not [p for p in os.listdir(tmp_path / "backups") if p.startswith(".partial")]

    target = tmp_path / "restored"
    target.mkdir()
    (target / "old-world.db").write_text("replaced by the restore")
    archive.restore(str(arc), str(target), res.sha256)
    assert tree(target) == tree(world)
    assert not (target / "old-world.db").exists()
    assert not (target / MANIFEST).exists()


def test_round_trip_on_a_python_without_the_data_filter(world, tmp_path, monkeypatch):
    """The operator image runs Debian bookworm's Python 3.11.2: no tarfile.data_filter and no
    TarInfo.replace. Restores must work there too (the real node's backup test found this)."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    monkeypatch.delattr(tarfile.TarInfo, "replace", raising=False)
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    target = tmp_path / "restored"
    target.mkdir()
    archive.restore(str(arc), str(target), res.sha256)
    assert tree(target) == tree(world)


def test_cli_prints_one_json_line(world, tmp_path):
    arc = tmp_path / "b.tar.gz"
    out = subprocess.run([sys.executable, "-m", "peon.commands", "archive", "create", str(world), str(arc)],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["sha256"] == hashlib.sha256(arc.read_bytes()).hexdigest()
    bad = subprocess.run([sys.executable, "-m", "peon.commands", "archive", "restore", str(arc),
                          str(tmp_path / "t"), "--sha256", "0" * 64], capture_output=True, text=True)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stderr


def test_a_failed_create_leaves_no_archive(world, tmp_path, monkeypatch):
    arc = tmp_path / "b.tar.gz"
    real_addfile = tarfile.TarFile.addfile
    calls = []

    def failing_addfile(self, *a, **kw):  # create writes every member with addfile
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_addfile(self, *a, **kw)
    monkeypatch.setattr(tarfile.TarFile, "addfile", failing_addfile)
    with pytest.raises(OSError):
        archive.create(str(world), str(arc))
    assert os.listdir(tmp_path) == ["world"]  # no final name, no partial left behind


def test_corrupt_archive_is_refused_and_target_untouched(world, tmp_path):
    arc = tmp_path / "b.tar.gz"
    archive.create(str(world), str(arc))
    data = bytearray(arc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arc.write_bytes(bytes(data))
    target = tmp_path / "live"
    target.mkdir()
    (target / "keep.db").write_text("the current world")
    with pytest.raises(ArchiveError, match="checksum mismatch"):
        archive.restore(str(arc), str(target))
    assert (target / "keep.db").read_text() == "the current world"


def hostile(tmp_path, build):
    """A .tar.gz with a manifest that tells the truth about whatever `build(tar)` adds, plus a
    matching sidecar: only the member is hostile."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        build(tar)
    body.seek(0)
    with tarfile.open(fileobj=body) as tar:
        files = [m for m in tar.getmembers() if m.isreg()]
    blob = json.dumps({"format": 1, "files": len(files), "bytes": sum(m.size for m in files)}).encode()
    arc = tmp_path / "evil.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        body.seek(0)
        with tarfile.open(fileobj=body) as src:
            for m in src.getmembers():
                tar.addfile(m, src.extractfile(m) if m.isreg() else None)
    (tmp_path / "evil.tar.gz.sha256").write_text(hashlib.sha256(arc.read_bytes()).hexdigest())
    return arc


def add_file(tar, name, data=b"pwned"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


@pytest.mark.parametrize("build, words", [
    (lambda t: add_file(t, "../escaped.txt"), "outside the target"),
    (lambda t: add_file(t, "a/../../escaped.txt"), "outside the target"),
    (lambda t: add_file(t, "/tmp/absolute.txt"), "outside the target"),
    (lambda t: add_link(t, "etc", "/etc"), "points outside"),
    (lambda t: add_link(t, "up", "../.."), "points outside"),
    (lambda t: (add_link(t, "inside", "sub"), add_file(t, "inside/x")), "through a link"),
    (lambda t: add_link(t, "hard", "../outside", tarfile.LNKTYPE), "outside the target"),
    (lambda t: (lambda i: (setattr(i, "type", tarfile.CHRTYPE), t.addfile(i)))(
        tarfile.TarInfo("null")), "device"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-abs", "symlink-up", "write-through-link",
        "hardlink-out", "device"])
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path, build, words):
    arc = hostile(tmp_path, build)
    target = tmp_path / "t" / "target"
    target.mkdir(parents=True)
    (target / "keep.db").write_text("the current world")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ArchiveError, match=words):
        archive.restore(str(arc), str(target))
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(tmp_path / "t") == ["target"]
    assert os.listdir(target) == ["keep.db"]
    assert not os.path.exists("/tmp/absolute.txt")


def test_archive_without_manifest_is_refused(tmp_path):
    arc = tmp_path / "plain.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        add_file(tar, "world.db")
    with pytest.raises(ArchiveError, match="manifest"):
        archive.restore(str(arc), str(tmp_path / "t"), hashlib.sha256(arc.read_bytes()).hexdigest())


def test_delete_removes_archive_and_sidecar(world, tmp_path):
    arc = tmp_path / "b.tar.gz"
    archive.create(str(world), str(arc))
    assert archive.delete(str(arc)) is True
    assert sorted(os.listdir(tmp_path)) == ["world"]
    assert archive.delete(str(arc)) is False


def test_a_world_being_written_is_flushed_in_the_background_until_the_body_ends(monkeypatch,
                                                                                  tmp_path):
    flushed = []
    monkeypatch.setattr(archive, "sync_volume", flushed.append)
    with archive.syncing_in_the_background(str(tmp_path), every=0.01):
        deadline = time.monotonic() + 5
        while len(flushed) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    after = len(flushed)
    time.sleep(0.05)
    assert after >= 3 and set(flushed) == {str(tmp_path)}
    assert len(flushed) == after  # no flush once the body has ended


def test_a_background_flush_that_fails_is_tried_again_not_the_end_of_flushing(monkeypatch,
                                                                               tmp_path):
    tries = []

    def failing(path):
        tries.append(path)
        raise OSError(5, "Input/output error")  # reported by the final sync before the swap
    monkeypatch.setattr(archive, "sync_volume", failing)
    with archive.syncing_in_the_background(str(tmp_path), every=0.01):
        deadline = time.monotonic() + 5
        while len(tries) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(tries) >= 3
