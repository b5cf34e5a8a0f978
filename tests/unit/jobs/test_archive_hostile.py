"""Restore against crafted archives, and create against a world that misbehaves.

Every hostile archive has a matching .sha256 sidecar and, unless the case is about the manifest,
a manifest that tells the truth, so only the hostile part can be what refuses it. Each refusal
is checked end to end through the CLI: exit code 1, the reason on stderr, no traceback, nothing
outside the target changed, and the target's world exactly as it was.
"""
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import tarfile
import time

import pytest

from peon.jobs import archive
from peon import commands as cli  # `peon`, as a Job runs it
from peon.jobs.archive import MANIFEST, ArchiveError


# --- building archives -----------------------------------------------------------------------

def file(name, data=b"pwned", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def folder(name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def hardlink(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def special(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def folder_with_data(name):
    info, data = file(name, b"data")
    info.type = tarfile.DIRTYPE
    return info, data


def truthful_manifest(members):
    """What Peon's create would declare: files and hard links, with their sizes."""
    sizes, files, total = {}, 0, 0
    for info, _ in members:
        if info.isreg():
            sizes[os.path.normpath(info.name)] = info.size
            files, total = files + 1, total + info.size
        elif info.islnk():
            files, total = files + 1, total + sizes.get(os.path.normpath(info.linkname), 0)
    return {"format": 1, "files": files, "bytes": total, "entries": len(members)}


def build(path, members, manifest=None, compresslevel=6):
    """A .tar.gz of the manifest (truthful unless given) and `members`, with its sidecar."""
    doc = truthful_manifest(members) if manifest is None else manifest
    blob = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=compresslevel) as tar:
        if doc is not False:
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    seal(path)
    return path


def seal(path):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


# --- the scene: a live world in T, and things beside it that must not change --------------------

def snapshot(root, skip=None):
    """Everything under root (but `skip`): kind, bytes, mode, owner, link target, mtime."""
    out = {".": os.lstat(root).st_mtime_ns}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) != str(skip)]
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", digest, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
            else:  # a fifo or socket: never opened
                out[rel] = ("special", st.st_mode, st.st_mtime_ns)
    return out


class Scene:
    def __init__(self, root):
        self.root = root
        self.data = root / "data"
        self.target = self.data / "T"
        (self.target / "saves").mkdir(parents=True)
        (self.target / "world.db").write_bytes(b"the live world " * 100)
        (self.target / "saves" / "slot1.sav").write_text("slot one")
        (self.target / "saves").chmod(0o750)
        os.symlink("world.db", self.target / "current.db")
        (root / "victim.txt").write_text("outside, two levels up")
        (self.data / "victim.txt").write_text("outside, beside T")
        (root / "victimdir").mkdir()
        (root / "victimdir" / "secret.txt").write_text("secret")
        self.arc = root / "arcs" / "evil.tar.gz"

    def freeze(self):
        self.outside = snapshot(self.root, skip=self.target)
        self.world = snapshot(self.target)
        del self.world["."]  # T's own mtime: a staging folder may come and go in it

    def assert_untouched(self):
        assert snapshot(self.root, skip=self.target) == self.outside, "something outside T changed"
        now = snapshot(self.target)
        del now["."]
        assert now == self.world, "the world in T changed"
        assert not [n for n in os.listdir(self.target) if n.startswith(".peon-")]

    def restore(self, capsys, arc=None):
        rc = cli.main(["archive", "restore", str(arc or self.arc), str(self.target)])
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        return rc, out


@pytest.fixture
def scene(tmp_path):
    return Scene(tmp_path)


def refused(scene, capsys, words, arc=None):
    """Restore through the CLI: exit 1, the reason on stderr, nothing changed anywhere."""
    scene.freeze()
    rc, out = scene.restore(capsys, arc)
    assert rc == 1, out
    assert out.err.startswith("peon archive restore: ")
    assert words in out.err, out.err
    assert out.out == ""
    scene.assert_untouched()
    return out.err


# --- the cases ---------------------------------------------------------------------------

HOSTILE = {
    # link chains that normalise away
    "chain-dot-then-write": ([symlink("s1", "."), symlink("l", "s1/s1/../.."), file("./l/evil.txt")],
                             "written through a link ('l')"),
    "chain-dot-link-alone": ([symlink("s1", "."), symlink("l", "s1/s1/../.."), file("ok.txt")],
                             "refusing link 'l' -> 's1/s1/../..': it points outside"),
    "chain-link-before-its-hop": ([symlink("l", "s1/s1/../.."), symlink("s1", ".")],
                                  "refusing link 'l' -> 's1/s1/../..': it points outside"),
    "chain-dir": ([symlink("d", "."), symlink("d/d/l", "../.."), file("d/./d/l/x")],
                  "refusing 'd/d/l': it would be written through a link ('d')"),
    "chain-dir-spelled-with-dots": ([symlink("d", "."), symlink("./d/d/l", "../.."), file("d/./d/l/x")],
                                    "refusing './d/d/l': it would be written through a link ('d')"),
    # a symlink then a member of the same name
    "symlink-then-file": ([symlink("s1", "."), symlink("t", "s1/s1/../../victim.txt"), file("t")],
                          "'t' appears twice in the archive (as a link, then as a file)"),
    "symlink-then-hardlink-same-name": (
        [file("a"), symlink("s1", "."), symlink("t", "s1/s1/../../victim.txt"), hardlink("t", "a")],
        "'t' appears twice in the archive (as a link, then as a hard link)"),
    "hardlink-to-a-symlink": ([symlink("s1", "."), symlink("t", "s1/s1/../../victim.txt"),
                               hardlink("h", "t")],
                              "a hard link must point to a file earlier in the archive"),
    # names that reach the staging folder, or Peon's own
    "staging-name": ([folder(".peon-restore-staging"), file(".peon-restore-staging/x")],
                     "reserved for Peon"),
    "staging-prefix": ([file(".peon-staging-abc/x")], "reserved for Peon"),
    "old-world-prefix": ([file("./.peon-old-abc/world.db")], "reserved for Peon"),
    "manifest-again": ([file(MANIFEST, b"{}")], "reserved for Peon"),
    # writes through a link that stays inside
    "write-through-inside-link": ([folder("sub"), symlink("in", "sub"), file("in/x")],
                                  "written through a link ('in')"),
    # plain escapes
    "absolute-path": ([file("/tmp/peon-absolute.txt")], "would land outside the target"),
    "dotdot": ([file("../victim.txt")], "would land outside the target"),
    "nested-dotdot": ([file("a/../../victim.txt")], "would land outside the target"),
    "weird-slashes-dotdot": ([file(".//a//..//..//victim.txt")], "would land outside the target"),
    "dot-only-name": ([folder(".")], "an empty name"),
    "dot-slash-name": ([file("./")], "an empty name"),
    "symlink-absolute": ([symlink("etc", "/etc")], "points outside the target"),
    "symlink-up": ([symlink("up", "../..")], "points outside the target"),
    "symlink-loop": ([symlink("a", "b"), symlink("b", "a")], "points outside the target"),
    "hardlink-outside": ([hardlink("h", "../victim.txt")], "would land outside the target"),
    "hardlink-absolute": ([hardlink("h", "/etc/passwd")], "would land outside the target"),
    "hardlink-to-later-member": ([hardlink("h", "later"), file("later")],
                                 "a hard link must point to a file earlier in the archive"),
    "hardlink-to-folder": ([folder("d"), hardlink("h", "d")],
                           "a hard link must point to a file earlier in the archive"),
    # special members
    "fifo": ([special("pipe", tarfile.FIFOTYPE)], "a fifo member"),
    "char-device": ([special("null", tarfile.CHRTYPE)], "a device member"),
    "block-device": ([special("sda", tarfile.BLKTYPE)], "a device member"),
    "unknown-type": ([special("odd", b"Z")], "special files are not restored"),
    # duplicates and shapes that cannot be
    "duplicate-file": ([file("a", b"one"), file("a", b"two")], "'a' appears twice"),
    "duplicate-spelled-differently": ([file("a/b", b"one"), file("./a//b", b"two")], "'a/b' appears twice"),
    "duplicate-folder": ([folder("d"), folder("d/")], "'d' appears twice"),
    "folder-is-a-file": ([file("a"), file("a/b")], "its folder 'a' is a file"),
    "link-over-implied-folder": ([file("x/y"), symlink("x", ".")], "'x' appears twice"),
    "long-name-part": ([file("a" * 256)], "longer than 255 bytes"),
    "folder-with-data": ([folder_with_data("d")], "a folder member carrying data"),
    # names that alias on a case-insensitive or normalising filesystem (issue 23, item 10)
    "alias-case-the-issue": ([symlink("s", "."), symlink("l", "S/S/../.."), file("L/evil.txt")],
                             "refusing 'L/evil.txt': 'L' differs from 'l' only by case or "
                             "Unicode normalisation"),
    "alias-case-link-alone": ([symlink("s", "."), symlink("l", "S/S/../.."), file("ok.txt")],
                              "refusing link 'l' -> 'S/S/../..': it passes through 'S', which "
                              "differs from 's' only by case"),
    "alias-case-files": ([file("Save.dat", b"one"), file("save.dat", b"two")],
                         "refusing 'save.dat': 'save.dat' differs from 'Save.dat' only by case"),
    "alias-case-implied-folders": ([file("World/a"), file("world/b")],
                                   "refusing 'world/b': 'world' differs from 'World'"),
    "alias-sharp-s": ([file("straße"), file("STRASSE")], "'STRASSE' differs from 'straße'"),
    "alias-nfc-nfd": ([folder("caf\u00e9"), file("cafe\u0301/x")],
                      "'cafe\u0301' differs from 'caf\u00e9' only by case or Unicode normalisation"),
    "alias-nfd-link": ([symlink("\u00e9", "."), symlink("l", "e\u0301/e\u0301/../.."), file("ok.txt")],
                       "refusing link 'l' -> 'e\u0301/e\u0301/../..': it passes through 'e\u0301', "
                       "which differs from '\u00e9'"),
    "alias-nfd-write-through": ([symlink("\u00e9", "."), symlink("l", "\u00e9/\u00e9/../.."),
                                 file("e\u0301/x")],
                                "refusing 'e\u0301/x': 'e\u0301' differs from '\u00e9'"),
    "alias-nfkc-ligature": ([file("\ufb00"), file("ff")], "'ff' differs from '\ufb00'"),
    "alias-fullwidth-dotdot": ([file("\uff0e\uff0e/victim.txt")], "reads as '..'"),
    "alias-two-dot-leader": ([symlink("l", "\u2025/\u2025"), file("ok.txt")], "reads as '..'"),
    "alias-reserved-upper-case": ([file(".PEON-staging-abc/x")], "reserved for Peon"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_changes(scene, capsys, name):
    members, words = HOSTILE[name]
    build(scene.arc, members)
    refused(scene, capsys, words)
    assert not os.path.exists("/tmp/peon-absolute.txt")


def test_a_nul_in_a_pax_name_is_refused(scene, capsys):
    info, data = file("harmless")
    info.pax_headers = {"path": "a\x00/../../victim.txt"}
    build(scene.arc, [(info, data)], manifest={"format": 1, "files": 1, "bytes": len(data)})
    refused(scene, capsys, "a name with a NUL byte")


# --- the manifest -----------------------------------------------------------------------------

@pytest.mark.parametrize("manifest, words", [
    ({"format": 1, "files": 2, "bytes": 5, "entries": 1}, "the manifest does not match the archive: it declares 2 files"),
    ({"format": 1, "files": 1, "bytes": 6, "entries": 1}, "does not match the archive: it declares 1 files, 6 bytes"),
    ({"format": 1, "files": 1, "bytes": 5, "entries": 3}, "3 members; the archive holds 1 files, 5 bytes, 1 members"),
    ({"format": 1, "files": 1, "bytes": 3, "entries": 1}, "the archive holds more than the 3 bytes its manifest allows"),
    ({"format": 1, "files": 1}, "'bytes' must be a count, got None"),
    ({"format": 1, "files": True, "bytes": 5}, "'files' must be a count, got True"),
    ({"format": 1, "files": 1, "bytes": -5}, "'bytes' must be a count"),
    (b"not json", "the manifest is not valid JSON"),
    (b"[1, 2]", "the manifest is not valid: not an object"),
    (False, "not a Peon archive: the manifest is missing"),
], ids=["files-lie", "bytes-lie", "entries-lie", "header-beyond-total", "no-bytes", "bool-count",
        "negative", "not-json", "not-an-object", "missing"])
def test_a_manifest_that_lies_or_is_broken_is_refused(scene, capsys, manifest, words):
    build(scene.arc, [file("world.db", b"12345")], manifest=manifest)
    refused(scene, capsys, words)


def test_more_members_than_the_manifest_declares_stops_at_once(scene, capsys):
    members = [file(f"f{i}", b"") for i in range(50)]
    build(scene.arc, members, manifest={"format": 1, "files": 50, "bytes": 0, "entries": 2})
    refused(scene, capsys, "the archive holds more than the 2 members its manifest declares")


class Meter:
    """The most any restore read of the decompressed stream."""

    def __init__(self, monkeypatch):
        self.most = 0
        real = archive._BoundedStream.read

        def read(stream, n=-1):
            try:
                return real(stream, n)
            finally:
                self.most = max(self.most, stream.read_so_far)
        monkeypatch.setattr(archive._BoundedStream, "read", read)


def test_a_gzip_bomb_is_stopped_before_it_inflates(scene, capsys, monkeypatch):
    zeros = bytes(50 << 20)
    build(scene.arc, [file("bomb.bin", zeros)], manifest={"format": 1, "files": 1, "bytes": 1000, "entries": 1},
          compresslevel=1)
    assert scene.arc.stat().st_size < 1 << 20  # 50 MiB of zeros in well under 1 MB
    meter = Meter(monkeypatch)
    started = time.monotonic()
    refused(scene, capsys, "the archive holds more than the 1000 bytes its manifest allows")
    assert meter.most < 1 << 20, meter.most  # refused at the header: the zeros were never inflated
    assert time.monotonic() - started < 5


def test_an_oversized_metadata_header_is_refused_before_it_is_read(scene, capsys, monkeypatch):
    info, data = file("x")
    info.pax_headers = {"comment": "A" * (4 << 20)}  # 4 MiB that tarfile would hold in memory
    build(scene.arc, [(info, data)], compresslevel=1)
    meter = Meter(monkeypatch)
    refused(scene, capsys, "metadata header")
    assert meter.most < 1 << 20


def test_headers_that_inflate_past_the_allowance_are_stopped(scene, capsys, monkeypatch):
    monkeypatch.setattr(archive, "STREAM_SLACK", 64 << 10)
    members = []
    for i in range(200):  # empty files, each with 40 KiB of pax padding: the data total is 0
        info, data = file(f"f{i}", b"")
        info.pax_headers = {"comment": "A" * (40 << 10)}
        members.append((info, data))
    build(scene.arc, members, compresslevel=1)
    refused(scene, capsys, "the archive inflates beyond what its manifest declares")


def test_a_truncated_archive_is_refused_before_anything_is_written(scene, capsys):
    build(scene.arc, [file("a.bin", os.urandom(200_000)), file("b.bin", os.urandom(200_000))])
    scene.arc.write_bytes(scene.arc.read_bytes()[:250_000])
    seal(scene.arc)
    refused(scene, capsys, "cannot read")


def test_an_empty_sidecar_is_refused(scene, capsys):
    build(scene.arc, [file("a")])
    scene.arc.with_name(scene.arc.name + ".sha256").write_text("")
    refused(scene, capsys, "is empty")


# --- space --------------------------------------------------------------------------------------

def test_not_enough_space_is_refused_up_front(scene, capsys, monkeypatch):
    build(scene.arc, [file("world.db", b"x" * 10_000)])
    monkeypatch.setattr(archive, "_free_space", lambda p: archive._Space(8_000, None, 4096))
    err = refused(scene, capsys, "not enough space in")
    assert "the current world is kept until the new one is complete" in err


def test_rounding_to_blocks_counts_toward_the_space_needed(scene, capsys, monkeypatch):
    build(scene.arc, [file(f"f{i}", b"x") for i in range(10)])  # 10 bytes, ten blocks on disk
    monkeypatch.setattr(archive, "_free_space", lambda p: archive._Space(8 * 4096, None, 4096))
    refused(scene, capsys, "not enough space in")


def test_a_manifest_larger_than_the_volume_is_refused_before_reading(scene, capsys, monkeypatch):
    build(scene.arc, [file("a")], manifest={"format": 1, "files": 1, "bytes": 1 << 50})
    meter = Meter(monkeypatch)
    refused(scene, capsys, "not enough space in")
    assert meter.most < 1 << 20


def test_not_enough_inodes_is_refused(scene, capsys, monkeypatch):
    build(scene.arc, [file(f"f{i}", b"") for i in range(20)])
    monkeypatch.setattr(archive, "_free_space", lambda p: archive._Space(1 << 30, 10, 4096))
    refused(scene, capsys, "not enough inodes")


def test_a_volume_more_than_half_full_restores_when_the_new_world_fits(scene, capsys, monkeypatch):
    (scene.target / "huge.db").write_bytes(os.urandom(3 << 20))  # the old world: over 3 MiB
    new = scene.root / "new"
    new.mkdir()
    (new / "world.db").write_bytes(os.urandom(1 << 20))
    archive.create(str(new), str(scene.arc))
    # Free: less than the old world (so no room for a copy of it), enough for the new one.
    monkeypatch.setattr(archive, "_free_space", lambda p: archive._Space((3 << 19) + 8192, None, 4096))
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    assert sorted(os.listdir(scene.target)) == ["world.db"]
    assert (scene.target / "world.db").read_bytes() == (new / "world.db").read_bytes()


# --- failures after the check: the old world stays ------------------------------------------

def test_a_failure_while_unpacking_leaves_the_old_world(scene, capsys, monkeypatch):
    build(scene.arc, [file(f"f{i}", b"data") for i in range(5)])
    real = tarfile.TarFile.makefile
    calls = []

    def failing(self, tarinfo, targetpath):
        calls.append(targetpath)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, tarinfo, targetpath)
    monkeypatch.setattr(tarfile.TarFile, "makefile", failing)
    refused(scene, capsys, "cannot unpack")
    assert len(calls) == 3  # it did start writing, into the staging folder


def test_a_failed_swap_puts_the_old_world_back(scene, capsys, monkeypatch):
    build(scene.arc, [file("a"), file("b"), file("c")])
    real = os.rename
    calls = []

    def failing(src, dst):
        if os.path.basename(os.path.dirname(src)).startswith(".peon-staging-"):
            calls.append(src)
            if len(calls) == 2:
                raise OSError(16, "Device or resource busy")
        return real(src, dst)
    monkeypatch.setattr(os, "rename", failing)
    refused(scene, capsys, "the old world is back")


def test_leftovers_of_an_interrupted_restore(scene, capsys):
    build(scene.arc, [file("new.db", b"new")])
    (scene.target / ".peon-staging-dead").mkdir()
    (scene.target / ".peon-staging-dead" / "half.db").write_text("half")
    (scene.target / ".peon-old-dead").mkdir()
    (scene.target / ".peon-old-dead" / "only-copy.db").write_text("keep me")
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    assert sorted(os.listdir(scene.target)) == [".peon-old-dead", "new.db"]
    assert "left over from an interrupted restore" in json.loads(out.out)["warnings"][0]
    assert "warning:" in out.err


# --- what must still restore -------------------------------------------------------------------

def test_weird_but_legal_names_restore_inside(scene, capsys):
    names = ["new\nline", "back\\..\\slash", "...", " lead", "-rf", "ünï/cödé", "a" * 255, "x/.peon-ok"]
    build(scene.arc, [file(n, n.encode()) for n in names] + [symlink("deep/l", "../ünï/cödé")])
    outside = snapshot(scene.root, skip=scene.target)
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    for n in names:
        assert (scene.target / n).read_bytes() == n.encode()
    assert (scene.target / "deep" / "l").read_bytes() == "ünï/cödé".encode()
    assert snapshot(scene.root, skip=scene.target) == outside


def test_names_that_are_just_different_restore(scene, capsys):
    """Names close to each other but not aliases: other letters, other accents, a link that
    passes through a folder spelled exactly as it is."""
    names = ["Save.dat", "Save.dat.bak", "saves2/x", "caf\u00e9", "cafe", "caf\u00e8", "ss", "s",
             "\u00c9t\u00e9/map", "\u00c9t\u00e9/Map2", "region/r.0.0.mca", "region2/r.0.0.mca"]
    build(scene.arc, [file(n, n.encode()) for n in names]
          + [symlink("latest", "\u00c9t\u00e9/map"), symlink("Here", ".")])
    outside = snapshot(scene.root, skip=scene.target)
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    for n in names:
        assert (scene.target / n).read_bytes() == n.encode()
    assert (scene.target / "latest").read_bytes() == "\u00c9t\u00e9/map".encode()
    assert snapshot(scene.root, skip=scene.target) == outside


def test_an_archive_made_the_old_way_still_restores(scene, capsys, tmp_path):
    """Archives made before this change: tar.add of each path, hard links as tarfile makes them."""
    src = tmp_path / "oldsrc"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.db").write_bytes(b"abc" * 1000)
    os.link(src / "d" / "a.db", src / "b.db")
    os.symlink("d/a.db", src / "cur")
    rels = sorted(os.path.relpath(os.path.join(r, n), src)
                  for r, ds, fs in os.walk(src) for n in ds + fs)
    sts = [os.lstat(src / r) for r in rels]
    manifest = json.dumps({"format": 1, "created": "then",
                           "files": sum(1 for s in sts if stat.S_ISREG(s.st_mode)),
                           "bytes": sum(s.st_size for s in sts if stat.S_ISREG(s.st_mode))}).encode()
    scene.arc.parent.mkdir()
    with tarfile.open(scene.arc, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for r in rels:
            tar.add(src / r, arcname=r, recursive=False)
    seal(scene.arc)
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    assert json.loads(out.out)["files"] == 2
    assert os.stat(scene.target / "b.db").st_ino == os.stat(scene.target / "d" / "a.db").st_ino
    assert os.readlink(scene.target / "cur") == "d/a.db"


def test_set_user_bits_are_dropped_and_set_group_folders_kept(scene, capsys):
    build(scene.arc, [folder("shared", 0o2775), file("shared/tool", b"#!/bin/sh\n", 0o4755)])
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    assert stat.S_IMODE(os.stat(scene.target / "shared").st_mode) == 0o2775
    assert stat.S_IMODE(os.stat(scene.target / "shared" / "tool").st_mode) == 0o755


# --- create against a world that misbehaves ----------------------------------------------------

@pytest.fixture
def world(tmp_path):
    w = tmp_path / "world"
    (w / "saves").mkdir(parents=True)
    (w / "world.db").write_bytes(os.urandom(100_000))
    (w / "saves" / "slot1.sav").write_text("slot one")
    os.symlink("world.db", w / "current.db")
    return w


def create_cli(capsys, world, arc):
    rc = cli.main(["archive", "create", str(world), str(arc)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out


def restores_cleanly(world, arc, tmp_path, skipped=()):
    """The archive restores, and gives back the world less what was skipped."""
    target = tmp_path / "restored"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    archive.restore(str(arc), str(target))
    expected = {k: v for k, v in snapshot(world).items() if k not in skipped and k != "."}
    got = {k: v for k, v in snapshot(target).items() if k != "."}
    drop_mtime = lambda t: {k: v[:-1] for k, v in t.items()}  # noqa: E731
    assert drop_mtime(got) == drop_mtime(expected)


def test_a_fifo_a_socket_and_a_device_are_skipped_with_a_warning(world, tmp_path, capsys):
    os.mkfifo(world / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(world / "saves" / "rcon.sock"))
    skipped = ["pipe", "saves/rcon.sock"]
    try:
        os.mknod(world / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        skipped.append("null")
    except PermissionError:
        pass
    arc = tmp_path / "b.tar.gz"
    rc, out = create_cli(capsys, world, arc)
    assert rc == 0, out.err
    warnings = json.loads(out.out)["warnings"]
    assert "skipped 'pipe': a fifo is not archived" in warnings
    assert "skipped 'saves/rcon.sock': a socket is not archived" in warnings
    if "null" in skipped:
        assert "skipped 'null': a device is not archived" in warnings
    assert "peon archive create: warning: skipped 'pipe'" in out.err
    sock.close()
    restores_cleanly(world, arc, tmp_path, skipped)


def test_an_unreadable_file_fails_the_run(world, tmp_path, capsys, monkeypatch):
    real = archive._open_world_file

    def denied(name, dir_fd):
        if name == "slot1.sav":
            raise PermissionError(13, "Permission denied", name)
        return real(name, dir_fd)
    monkeypatch.setattr(archive, "_open_world_file", denied)
    arc = tmp_path / "backups" / "b.tar.gz"
    rc, out = create_cli(capsys, world, arc)
    assert rc == 1
    assert "cannot read 'saves/slot1.sav': Permission denied; the backup would miss it" in out.err
    assert os.listdir(tmp_path / "backups") == []  # no archive, no partial


def test_an_unreadable_folder_fails_the_run(world, tmp_path, monkeypatch):
    real = os.fwalk

    def fwalk(top, **kw):  # as fwalk reports a folder it cannot open
        kw["onerror"](PermissionError(13, "Permission denied", "saves"))
        yield from real(top, **kw)
    monkeypatch.setattr(os, "fwalk", fwalk)
    arc = tmp_path / "backups" / "b.tar.gz"
    with pytest.raises(ArchiveError, match="cannot read folder 'saves': Permission denied; "
                                           "the backup would miss what is in it"):
        archive.create(str(world), str(arc))
    assert os.listdir(tmp_path / "backups") == []


def test_a_file_swapped_for_a_link_is_not_followed(world, tmp_path, monkeypatch):
    (tmp_path / "outside.txt").write_text("not part of the world")
    real = archive._open_world_file

    def swapped(name, dir_fd):
        if name == "slot1.sav":
            os.unlink(name, dir_fd=dir_fd)
            os.symlink(str(tmp_path / "outside.txt"), name, dir_fd=dir_fd)
        return real(name, dir_fd)
    monkeypatch.setattr(archive, "_open_world_file", swapped)
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    assert res.warnings == ["skipped 'saves/slot1.sav': it was replaced by a link while it was archived"]
    with tarfile.open(arc) as tar:
        assert "saves/slot1.sav" not in tar.getnames()
        assert b"not part of the world" not in b"".join(
            tar.extractfile(m).read() for m in tar.getmembers() if m.isreg())


def test_a_file_that_vanishes_is_skipped_with_a_warning(world, tmp_path, monkeypatch):
    real = archive._open_world_file

    def vanishing(name, dir_fd):
        if name == "slot1.sav":
            os.unlink(name, dir_fd=dir_fd)
        return real(name, dir_fd)
    monkeypatch.setattr(archive, "_open_world_file", vanishing)
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    assert res.warnings == ["skipped 'saves/slot1.sav': it vanished before it was read"]
    assert res.files == 1 and res.bytes == 100_000  # the manifest counts what was archived
    restores_cleanly(world, arc, tmp_path)


def test_a_file_that_shrinks_while_read_fails_the_run(world, tmp_path, monkeypatch):
    real = archive._WorldFile.read

    def shrinking(self, n):
        if self.rel == "world.db" and self.left == self.size:
            os.truncate(world / "world.db", 10)
        return real(self, n)
    monkeypatch.setattr(archive._WorldFile, "read", shrinking)
    arc = tmp_path / "backups" / "b.tar.gz"
    with pytest.raises(ArchiveError, match=r"'world.db' shrank while it was read \(10 of 100000 bytes\)"):
        archive.create(str(world), str(arc))
    assert os.listdir(tmp_path / "backups") == []


def test_a_file_that_grows_while_read_is_archived_as_read_with_a_warning(world, tmp_path, monkeypatch):
    real = archive._WorldFile.read
    original = (world / "world.db").read_bytes()

    def growing(self, n):
        if self.rel == "world.db" and self.left == self.size:
            with open(world / "world.db", "ab") as f:
                f.write(b"more")
        return real(self, n)
    monkeypatch.setattr(archive._WorldFile, "read", growing)
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    assert res.warnings == ["'world.db' changed while it was read: archived as read, "
                            "its copy may mix old and new contents"]
    target = tmp_path / "t"
    archive.restore(str(arc), str(target))
    assert (target / "world.db").read_bytes() == original


def test_links_leading_outside_are_skipped_with_a_warning(world, tmp_path, capsys):
    os.symlink("/etc/passwd", world / "abs")
    os.symlink("../../victim", world / "saves" / "up")
    os.symlink(".", world / "s1")
    os.symlink("s1/s1/../..", world / "chain")  # lexically ".", really above the world
    os.symlink("saves/slot1.sav", world / "fine")
    arc = tmp_path / "b.tar.gz"
    rc, out = create_cli(capsys, world, arc)
    assert rc == 0, out.err
    assert json.loads(out.out)["warnings"] == [
        "skipped link 'abs' -> '/etc/passwd': absolute links are not archived",
        "skipped link 'chain' -> 's1/s1/../..': it leads outside the world",
        "skipped link 'saves/up' -> '../../victim': it leads outside the world"]
    restores_cleanly(world, arc, tmp_path, skipped=["abs", "chain", "saves/up"])


def test_names_that_alias_are_skipped_with_a_warning(world, tmp_path):
    """A case-sensitive volume may hold names that restore refuses as aliases: the first (in
    sorted order) is archived, the others skipped with a warning, so the archive restores."""
    (world / "Saves").mkdir()
    (world / "Saves" / "x").write_text("the other saves")
    (world / "cafe\u0301").write_text("decomposed")
    (world / "caf\u00e9").write_text("composed")
    (world / "\uff0e\uff0e").write_text("full-width dots")
    os.symlink(".", world / "s")
    os.symlink("S/S/../..", world / "l")  # through the alias `S` of the link `s`: above the world
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    assert res.warnings == [
        "skipped 'caf\u00e9': it differs from 'cafe\u0301' only by case or Unicode normalisation "
        "(the same name on a case-insensitive or normalising filesystem), which restore refuses",
        "skipped 'saves': it differs from 'Saves' only by case or Unicode normalisation (the same "
        "name on a case-insensitive or normalising filesystem), which restore refuses",
        "skipped '\uff0e\uff0e': its name reads as '..' on a normalising filesystem, which "
        "restore refuses",
        "skipped link 'l' -> 'S/S/../..': it passes through 'S', which differs from 's' only by "
        "case or Unicode normalisation (the same name on a case-insensitive or normalising "
        "filesystem)"]
    restores_cleanly(world, arc, tmp_path, skipped=["caf\u00e9", "saves", "saves/slot1.sav",
                                                    "\uff0e\uff0e", "l"])


def test_peon_names_at_the_top_are_skipped(world, tmp_path):
    (world / ".peon-old-x").mkdir()
    (world / ".peon-old-x" / "w.db").write_text("old")
    (world / MANIFEST).write_text("{}")
    (world / "saves" / ".peon-fine").write_text("deeper is fine")
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    assert res.warnings == [f"skipped {n!r}: names starting with '.peon-' are Peon's own"
                            for n in (".peon-manifest.json", ".peon-old-x")]
    restores_cleanly(world, arc, tmp_path, skipped=[".peon-old-x", ".peon-old-x/w.db", MANIFEST])


def test_the_json_keeps_few_warnings_and_the_log_all(world, tmp_path, capsys):
    for i in range(30):
        os.mkfifo(world / f"pipe{i:02}")
    arc = tmp_path / "b.tar.gz"
    rc, out = create_cli(capsys, world, arc)
    assert rc == 0
    line = out.out.strip()
    assert len(line) < 3000  # the termination message holds 4 KiB
    result = json.loads(line)
    assert result["warnings"][-1] == "… and 22 more (see the Job's log)"
    assert {"archive", "sha256", "size", "files", "bytes"} <= set(result)
    assert out.err.count("warning: skipped") == 30


def test_the_manifest_counts_what_is_in_the_archive(world, tmp_path):
    os.link(world / "world.db", world / "saves" / "hard.db")
    arc = tmp_path / "b.tar.gz"
    res = archive.create(str(world), str(arc))
    with tarfile.open(arc) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        members = tar.getmembers()[1:]
    assert manifest["files"] == res.files == 3  # world.db, slot1.sav, and the hard link
    assert manifest["bytes"] == res.bytes == 200_000 + len("slot one")
    assert manifest["entries"] == len(members)
    assert sum(1 for m in members if m.islnk()) == 1
    restores_cleanly(world, arc, tmp_path)


# --- archives from before `entries`, and inputs that once raised instead of saying why -----------

def test_an_old_live_backup_whose_file_grew_while_read_still_restores(scene, capsys):
    """The previous create counted bytes before reading; a game appending to its world in
    between made the archive hold a little more than declared. Those backups must restore."""
    grown = b"tick\n" * 300
    build(scene.arc, [file("world.db", grown)],
          manifest={"format": 1, "files": 1, "bytes": len(grown) - 50})
    rc, out = scene.restore(capsys)
    assert rc == 0, out.err
    assert (scene.target / "world.db").read_bytes() == grown


def test_an_old_format_archive_far_beyond_its_manifest_is_still_refused(scene, capsys):
    from peon.jobs.archive import OLD_FORMAT_SLACK
    build(scene.arc, [file("bomb.bin", bytes(OLD_FORMAT_SLACK + 2000))],
          manifest={"format": 1, "files": 1, "bytes": 1000}, compresslevel=1)
    refused(scene, capsys, "its manifest allows")


def test_a_deeply_nested_manifest_is_refused_with_a_message(scene, capsys):
    build(scene.arc, [file("a.txt", b"x")], manifest=b"[" * 3000)  # small enough to be read, deep enough to recurse
    refused(scene, capsys, "the manifest is not valid JSON")


def test_an_impossible_time_is_refused_with_a_message(scene, capsys):
    info, data = file("a.txt", b"x")
    info.pax_headers = {"mtime": "1e999"}
    build(scene.arc, [(info, data)])
    scene.freeze()
    rc, out = scene.restore(capsys)
    assert rc == 1 and "Traceback" not in out.err and out.err.startswith("peon archive restore: ")
