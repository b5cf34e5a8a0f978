"""`peon store seed`: a new, empty world restored from the store, one with data kept. Whether the
world is empty is decided before restic is asked anything (restic here is a fake that fails the
test when called)."""
import json

import pytest

from peon import commands as cli  # `peon`, as a Job runs it
from peon.jobs import main as jobs_main
from peon.jobs import store


@pytest.fixture
def no_restic(monkeypatch):
    def called(*a, **k):
        raise AssertionError(f"restic was asked {a}")
    monkeypatch.setattr(store, "_restic", called)
    monkeypatch.setattr(store, "_probe", called)


SNAPS = [{"id": "aa" * 32, "time": "2026-12-01T10:00:00.123456789Z", "paths": ["/data"]},
         {"id": "bb" * 32, "time": "2026-12-05T09:30:00.5+01:00", "paths": ["/data"],
          "summary": {"total_bytes_processed": 123456, "total_files_processed": 7}},
         {"id": "cc" * 32, "time": "2026-12-03T10:00:00Z", "paths": ["/data"]},
         # later as written, earlier as an instant (another zone)
         {"id": "dd" * 32, "time": "2026-12-05T09:45:00+02:00",
          "paths": ["/data"]}]


@pytest.fixture
def fake_store(monkeypatch):
    restored = []
    monkeypatch.setattr(store, "_probe", lambda: "ok")
    monkeypatch.setattr(store, "_snapshots", lambda host: SNAPS)
    monkeypatch.setattr(store, "restore", lambda snap, src, target, size=None:
                        restored.append((snap, src, target, size)))
    return restored


def test_a_world_that_holds_data_is_kept_and_the_store_is_not_asked(tmp_path, no_restic):
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "world.db").write_bytes(b"x")
    assert store.seed("latest", str(tmp_path), "games/odin") == {"kept": "the world holds data"}


def test_an_empty_world_is_seeded_from_the_newest_snapshot(tmp_path, fake_store):
    (tmp_path / "lost+found").mkdir()
    (tmp_path / ".peon-staging-x").mkdir()  # a seed cut off half-way: restore clears it
    got = store.seed("latest", str(tmp_path), "games/odin")
    assert got == {"seeded": "bb" * 32, "time": "2026-12-05T08:30:00Z"}
    # the world's size as the snapshot recorded it: the restore runs no `stats` first
    assert fake_store == [("bb" * 32, "/data", str(tmp_path), 123456)]


def test_a_named_snapshot_is_seeded_and_a_missing_one_fails(tmp_path, fake_store):
    assert store.seed("aaaaaaaa", str(tmp_path), "games/odin")["seeded"] == "aa" * 32
    assert fake_store[-1][3] is None  # no summary (restic before 0.17): stats reads the size
    with pytest.raises(store.StoreError, match="snapshot eeeeeeee of games/odin is not in the repository"):
        store.seed("eeeeeeee", str(tmp_path), "games/odin")


def test_no_snapshot_of_the_server_fails(tmp_path, fake_store, monkeypatch):
    monkeypatch.setattr(store, "_snapshots", lambda host: [])
    with pytest.raises(store.StoreError, match="no snapshot of games/odin"):
        store.seed("latest", str(tmp_path), "games/odin")


def test_a_wrong_password_fails_with_the_reason_in_the_termination_message(tmp_path, monkeypatch, capsys):
    import subprocess
    monkeypatch.setattr(store, "_probe", lambda: "ok")
    monkeypatch.setattr(store, "_restic", lambda *a, **k: subprocess.CompletedProcess(
        a, 12, "", "Fatal: wrong password or no key found\n"))
    written = []
    monkeypatch.setattr(jobs_main, "_termination_message", written.append)
    monkeypatch.setenv("RESTIC_PASSWORD", "s3cret-pass")
    code = cli.main(["store", "seed", "latest", str(tmp_path), "--host", "games/odin"])
    assert code == 1
    said = json.loads(written[0])
    assert "encryption password" in said["error"] and "s3cret-pass" not in written[0]
    assert "s3cret-pass" not in capsys.readouterr().err


def test_latest_is_the_newest_to_the_microsecond():
    snaps = [{"id": "aa" * 32, "time": "2026-12-05T09:30:00.9Z"},
             {"id": "bb" * 32, "time": "2026-12-05T09:30:00.1Z"}]
    assert store.pick_snapshot(snaps, "latest", "h")["id"] == "aa" * 32
    assert store.pick_snapshot(snaps[::-1], "latest", "h")["id"] == "aa" * 32
