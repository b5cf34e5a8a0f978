"""Off-site backups' engine, for real: `peon store` (restic) against SeaweedFS's S3 on
loopback. Bit-exact restores, encryption at rest, deduplication, and each fault with its
message and the world left as it was. No Kubernetes here: the GameServer side is in
test_realnode.py."""
from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, build  # noqa: E402

from peon.jobs import store  # noqa: E402
import realnode_helpers  # noqa: E402

PASSWORD = "correct horse battery staple"
MARKER = b"PLAINTEXT-WORLD-MARKER-7f3a"  # written into the world; must never reach the bucket


@pytest.fixture(scope="module")
def tools():
    restic, weed = build("restic"), build("seaweedfs")
    if not (restic and weed):
        pytest.skip("restic or SeaweedFS could not be built here (tools/testbed/build-gotool)")
    return restic, weed


@pytest.fixture(scope="module")
def s3(tools, tmp_path_factory):
    server = SeaweedFS(tools[1], tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def repo(s3, tools, monkeypatch, request):
    """A repository of its own in the bucket, and restic on PATH, as in the Job's container."""
    prefix = f"t/{request.node.name[:40]}-{random.randrange(1 << 30):x}"
    monkeypatch.setenv("PATH", f"{os.path.dirname(tools[0])}:{os.environ['PATH']}")
    monkeypatch.setenv("RESTIC_REPOSITORY", store.repository(s3.endpoint, "peon-backups", prefix))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)
    return prefix


def _wait_listed(s3, prefix: str, part: str) -> list[str]:
    import time
    for _ in range(60):
        objects = s3.objects("peon-backups", prefix)
        if any(part in o for o in objects):
            return objects
        time.sleep(0.5)
    raise AssertionError(f"no object with {part} under {prefix}: {objects}")


def snapshot_ids() -> set[str]:
    """The repository's snapshots, by full ID (a snapshot's JSON also names its parent's)."""
    out = subprocess.run(["restic", "--no-cache", "snapshots", "--json"], capture_output=True,
                         text=True, check=True).stdout
    return {s["id"] for s in json.loads(out)}


def backed_up_then_changed(tmp_path: pathlib.Path) -> tuple[pathlib.Path, str, dict]:
    """A world backed up, then changed: (the world, the snapshot, its fingerprint now)."""
    world = tmp_path / "data"
    make_world(world)
    snap = store.backup(str(world), "h", "b1").snapshot
    (world / "kept.txt").write_text("the world as it is now")
    return world, snap, fingerprint(world)


def make_world(root: pathlib.Path, files: int = 60, seed: int = 1) -> None:
    rng = random.Random(seed)
    (root / "worlds" / "Dedicated").mkdir(parents=True)
    for i in range(files):
        d = root / "worlds" / ("Dedicated" if i % 2 else "")
        data = (MARKER + b"\n" + rng.randbytes(rng.randrange(1000, 60_000))) if i % 3 else \
            (b"compressible line of a config file\n" * rng.randrange(10, 3000))
        (d / f"f{i:03d}.db").write_bytes(data)
    os.chmod(root / "worlds" / "f000.db", 0o600)
    os.symlink("Dedicated/f001.db", root / "worlds" / "latest")
    (root / "empty").write_bytes(b"")


def fingerprint(root: pathlib.Path) -> dict[str, tuple]:
    """Every entry's content hash (or link target), whole mode and owner."""
    return realnode_helpers.fingerprint(root, full_mode=True)


def test_a_world_goes_to_the_store_encrypted_and_comes_back_bit_exact(repo, s3, tmp_path):
    world = tmp_path / "data"
    make_world(world)
    os.chown(world / "worlds" / "f002.db", 1234, 4321)
    before = fingerprint(world)
    result = store.backup(str(world), "games/vikings", "b1")
    assert result.snapshot and result.files == 61 and result.size > 1_000_000
    # Encrypted at rest: not one object in the bucket holds the world's plaintext.
    # (The filer's listing can trail a fresh upload by a moment.)
    objects = _wait_listed(s3, repo, "/snapshots/")
    assert any("/data/" in o for o in objects)
    assert not any(MARKER in s3.read(o) for o in objects)
    # The world is changed, then restored: exactly what was backed up, modes and owners too.
    shutil.rmtree(world / "worlds" / "Dedicated")
    (world / "new-file").write_text("made after the backup")
    store.restore(result.snapshot, str(world), str(world))
    assert fingerprint(world) == before
    assert not [n for n in os.listdir(world) if n.startswith(".peon-")]


def test_a_second_backup_of_an_unchanged_world_adds_almost_nothing(repo, tmp_path):
    world = tmp_path / "data"
    make_world(world, files=90)
    first = store.backup(str(world), "games/vikings", "b1")
    second = store.backup(str(world), "games/vikings", "b2")
    assert second.snapshot != first.snapshot
    assert second.added < 0.05 * first.size, (second.added, first.size)
    # 1% of the files changed: the backup adds about those files, not the world.
    (world / "worlds" / "f004.db").write_bytes(os.urandom(30_000))
    third = store.backup(str(world), "games/vikings", "b3")
    assert 30_000 <= third.added < 0.2 * first.size, (third.added, first.size)


def test_forget_removes_the_snapshot_and_only_it(repo, tmp_path):
    world = tmp_path / "data"
    make_world(world)
    old = store.backup(str(world), "h", "b1")
    kept = store.backup(str(world), "h", "b2")
    assert store.forget(old.snapshot)["deleted"] is True
    ids = snapshot_ids()
    assert old.snapshot not in ids and kept.snapshot in ids
    assert store.forget(old.snapshot)["deleted"] is False  # already gone: fine, said


def test_a_wrong_password_is_said_and_the_world_is_left_alone(repo, tmp_path, monkeypatch):
    world, snap, before = backed_up_then_changed(tmp_path)
    monkeypatch.setenv("RESTIC_PASSWORD", "not the password")
    with pytest.raises(store.StoreError, match="encryption password"):
        store.restore(snap, str(world), str(world))
    with pytest.raises(store.StoreError, match="encryption password"):
        store.backup(str(world), "h", "b2")
    assert fingerprint(world) == before


def test_wrong_credentials_are_said(repo, tmp_path, monkeypatch):
    world = tmp_path / "data"
    make_world(world, files=3)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(store.StoreError, match="refused the credentials") as e:
        store.backup(str(world), "h", "b1")
    assert "wrong-secret" not in str(e.value) and PASSWORD not in str(e.value)


def test_an_unreachable_store_is_said_in_bounded_time(repo, tmp_path, monkeypatch):
    world = tmp_path / "data"
    make_world(world, files=3)
    monkeypatch.setenv("RESTIC_REPOSITORY", store.repository("http://127.0.0.1:1", "b", "p"))
    monkeypatch.setenv("PEON_STORE_PROBE_SECONDS", "5")
    with pytest.raises(store.StoreError, match="cannot be reached"):
        store.backup(str(world), "h", "b1")


def test_a_corrupted_object_fails_the_restore_and_the_world_stays(repo, s3, tmp_path):
    world, snap, before = backed_up_then_changed(tmp_path)
    packs = [o for o in _wait_listed(s3, repo, "/snapshots/") if "/data/" in o]
    for p in packs:  # every data pack garbled behind restic's back
        data = bytearray(s3.read(p))
        data[len(data) // 2] ^= 0xFF
        s3.overwrite(p, bytes(data))
    with pytest.raises(store.StoreError, match="world is as it was"):
        store.restore(snap, str(world), str(world))
    assert fingerprint(world) == before
    assert not [n for n in os.listdir(world) if n.startswith(".peon-")]


def test_retention_while_the_store_is_unreachable_deletes_nothing(repo, s3, tmp_path, monkeypatch):
    world = tmp_path / "data"
    make_world(world, files=3)
    snap = store.backup(str(world), "h", "b1").snapshot
    reachable = os.environ["RESTIC_REPOSITORY"]
    monkeypatch.setenv("RESTIC_REPOSITORY", reachable.replace(f":{s3.s3}/", ":1/"))
    monkeypatch.setenv("PEON_STORE_PROBE_SECONDS", "5")
    with pytest.raises(store.StoreError, match="cannot be reached"):
        store.forget(snap)  # the delete Job fails; the GameServerBackup keeps its finalizer
    monkeypatch.setenv("RESTIC_REPOSITORY", reachable)
    assert snap in snapshot_ids()


def test_a_backup_cut_off_mid_upload_leaves_no_snapshot_and_the_store_works_on(repo, s3, tmp_path):
    """The run dies while restic uploads (its Job's deadline, the node lost): no snapshot is
    written for it, so nothing half-stored can ever count as a good backup; the repository
    takes the next backup and the earlier snapshot still restores bit-exact."""
    import signal
    import time
    world, first, _ = backed_up_then_changed(tmp_path)
    before = fingerprint(world)
    big = world / "region"
    big.mkdir()
    rng = random.Random(7)
    for i in range(64):  # 256 MiB of new, incompressible data: many packs to upload
        (big / f"r{i}.mca").write_bytes(rng.randbytes(4 << 20))
    cut = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "peon"), "store", "backup",
                            str(world), "--host", "h", "--name", "cut"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    # Kill it once data packs are landing in the bucket, before it could finish.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any("/data/" in o for o in s3.objects("peon-backups", repo)):
            break
        time.sleep(0.1)
    assert cut.poll() is None, "the backup finished before it could be cut off"
    os.killpg(cut.pid, signal.SIGKILL)
    cut.wait()
    assert snapshot_ids() == {first}  # the cut-off run left no snapshot
    second = store.backup(str(world), "h", "after").snapshot
    assert snapshot_ids() == {first, second}
    target = tmp_path / "restored"
    store.restore(first, str(world), str(target))
    restored = fingerprint(target)
    assert {k: v for k, v in before.items() if k != "kept.txt"} == restored


# --- a world seeded from the store (`peon store seed`, the game pod's init step) ----------------

def test_seed_restores_the_newest_snapshot_of_the_server_into_an_empty_world_bit_exact(repo, tmp_path):
    world = tmp_path / "data"
    make_world(world, seed=1)
    older = store.backup(str(world), "games/vikings", "b1").snapshot
    (world / "kept.txt").write_text("written after the first backup")
    before = fingerprint(world)
    newest = store.backup(str(world), "games/vikings", "b2").snapshot
    other = tmp_path / "other"
    make_world(other, files=3, seed=9)
    store.backup(str(other), "games/elsewhere", "b3")  # another server's, newer still
    fresh = tmp_path / "fresh"
    (fresh / "lost+found").mkdir(parents=True)  # what a new ext4 volume holds
    got = store.seed("latest", str(fresh), "games/vikings")
    assert got["seeded"] == newest and got["time"].endswith("Z")
    # The world as backed up: source path /data of the snapshot, here the tmp folder's.
    assert {k: v for k, v in fingerprint(fresh).items() if k != "lost+found"} == \
        {k: v for k, v in before.items()}
    # A snapshot named by a prefix of its id; the world now holds data, so it is kept.
    assert store.seed(older[:12], str(fresh), "games/vikings") == {"kept": "the world holds data"}
    assert {k: v for k, v in fingerprint(fresh).items() if k != "lost+found"} == before


def test_seed_fails_with_the_reason_when_the_snapshot_cannot_be_had(repo, tmp_path, monkeypatch):
    world = tmp_path / "data"
    make_world(world, files=3)
    store.backup(str(world), "games/vikings", "b1")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(store.StoreError, match="no snapshot of games/other"):
        store.seed("latest", str(fresh), "games/other")
    with pytest.raises(store.StoreError, match="snapshot deadbeef of games/vikings is not"):
        store.seed("deadbeef", str(fresh), "games/vikings")
    monkeypatch.setenv("RESTIC_PASSWORD", "not the password")
    with pytest.raises(store.StoreError, match="encryption password") as e:
        store.seed("latest", str(fresh), "games/vikings")
    assert "not the password" not in str(e.value)
    monkeypatch.setenv("RESTIC_REPOSITORY", store.repository("http://127.0.0.1:1", "b", "p"))
    monkeypatch.setenv("PEON_STORE_PROBE_SECONDS", "5")
    with pytest.raises(store.StoreError, match="cannot be reached"):
        store.seed("latest", str(fresh), "games/vikings")
    assert os.listdir(fresh) == []  # nothing half-restored


# --- backups listed back from the store (`peon store list`, the operator's listing Job) ---------

def test_list_gives_the_servers_snapshots_with_their_tags_newest_first(repo, tmp_path):
    world = tmp_path / "data"
    make_world(world, files=5)
    old = store.backup(str(world), "games/vikings", "vikings-20261201-0300", "Scheduled",
                       "valheim", "lloesche/valheim-server:v3")
    (world / "kept.txt").write_text("more")
    new = store.backup(str(world), "games/vikings", "b2")
    store.backup(str(world), "games/elsewhere", "b3")  # another server's: not listed
    subprocess.run(["restic", "--no-cache", "backup", str(world), "--host", "games/vikings",
                    "--quiet"], check=True)  # one made by hand: no backup name, not listed
    got = store.list_snapshots("games/vikings")
    assert got["complete"] is True
    assert [e["id"] for e in got["snapshots"]] == [new.snapshot, old.snapshot]
    first = got["snapshots"][1]
    assert (first["name"], first["reason"], first["game"], first["image"]) == \
        ("vikings-20261201-0300", "Scheduled", "valheim", "lloesche/valheim-server:v3")
    assert first["size"] == old.size and first["files"] == old.files
    assert first["path"] == str(world) and first["time"].endswith("Z")
    assert "reason" not in got["snapshots"][0]
    # A forgotten snapshot is no longer listed.
    store.forget(old.snapshot)
    assert [e["id"] for e in store.list_snapshots("games/vikings")["snapshots"]] == [new.snapshot]


def test_list_of_a_repository_that_is_not_there_is_no_word(repo, monkeypatch):
    got = store.list_snapshots("games/vikings")  # nothing backed up to this prefix yet
    assert got["snapshots"] == [] and got["missing"] is True and got["complete"] is False
    monkeypatch.setenv("RESTIC_REPOSITORY", store.repository("http://127.0.0.1:1", "b", "p"))
    monkeypatch.setenv("PEON_STORE_PROBE_SECONDS", "5")
    with pytest.raises(store.StoreError, match="cannot be reached"):
        store.list_snapshots("games/vikings")


def test_list_with_create_makes_the_repository_and_the_first_backup_finds_it(repo, s3, tmp_path, monkeypatch):
    got = store.list_snapshots("games/vikings", create=True)
    assert got == {"host": "games/vikings", "snapshots": [], "complete": False, "created": True}
    config = subprocess.run(["restic", "--no-cache", "cat", "config"], capture_output=True,
                            text=True, check=True).stdout
    # Made again by a backup that found it missing at the same moment: restic refuses, the
    # repository is there, and it is the same one.
    store._init()
    assert subprocess.run(["restic", "--no-cache", "cat", "config"], capture_output=True,
                          text=True, check=True).stdout == config
    monkeypatch.setattr(store, "_init", lambda: pytest.fail("the first backup made the repository"))
    world = tmp_path / "data"
    make_world(world, files=5)
    first = store.backup(str(world), "games/vikings", "b1")
    got = store.list_snapshots("games/vikings", create=True)
    assert [e["id"] for e in got["snapshots"]] == [first.snapshot] and "created" not in got
    # Wrong keys are said by the listing, and nothing is made.
    monkeypatch.setenv("RESTIC_REPOSITORY", store.repository(s3.endpoint, "peon-backups", f"{repo}-other"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(store.StoreError, match="refused the credentials"):
        store.list_snapshots("games/vikings", create=True)
