"""`peon store list`: the server's snapshots Peon made, newest first, bounded, as one JSON line
whose length and SHA-256 are the termination message (restic faked: its JSON as 0.18 writes it)."""
import hashlib
import json

from peon.jobs import main as jobs_main
from peon.jobs import store


def restic_snap(n: int, time: str, tags=None, paths=("/data",), summary=True):
    s = {"id": f"{n:02x}" * 32, "short_id": f"{n:02x}" * 4, "time": time, "hostname": "games/odin",
         "paths": list(paths), "tags": tags if tags is not None else [f"peon.dev/backup=b{n}"]}
    if summary:
        s["summary"] = {"total_files_processed": 10 * n, "total_bytes_processed": 1000 * n}
    return s


SNAPS = [restic_snap(1, "2026-12-01T10:00:00.123456789Z",
                     ["peon.dev/backup=odin-20261201-1000", "peon.dev/reason=Scheduled",
                      "peon.dev/game=valheim", "peon.dev/image=lloesche/valheim-server:v3"]),
         restic_snap(2, "2026-12-05T09:45:00+02:00"),  # 07:45Z: older than 3 as an instant
         restic_snap(3, "2026-12-05T08:30:00Z", summary=False),
         restic_snap(4, "2026-12-06T00:00:00Z", tags=["by-hand"]),  # not one of Peon's
         {"id": "not-an-id", "time": "2026-12-06T00:00:00Z", "tags": ["peon.dev/backup=x"]}]


def test_the_listing_is_peons_snapshots_newest_first_with_their_tags(monkeypatch):
    monkeypatch.setattr(store, "_probe", lambda: "ok")
    monkeypatch.setattr(store, "_snapshots", lambda host: SNAPS)
    got = store.list_snapshots("games/odin")
    assert got["complete"] is True and "missing" not in got
    assert [e["id"][:2] for e in got["snapshots"]] == ["03", "02", "01"]
    assert got["snapshots"][2] == {
        "id": "01" * 32, "time": "2026-12-01T10:00:00Z", "name": "odin-20261201-1000",
        "path": "/data", "reason": "Scheduled", "game": "valheim",
        "image": "lloesche/valheim-server:v3", "size": 1000, "files": 10}
    assert got["snapshots"][1]["time"] == "2026-12-05T07:45:00Z"
    assert "size" not in got["snapshots"][0]  # a snapshot without restic's summary


def test_two_backups_in_one_second_are_still_newest_first(monkeypatch):
    # The listing shows whole seconds; the order is restic's own time (the suite once saw
    # these two the wrong way round, ordered by their ids within the second).
    snaps = [restic_snap(0xf0, "2026-12-07T07:29:11.100000001Z"),
             restic_snap(0x01, "2026-12-07T07:29:11.950247805Z")]
    monkeypatch.setattr(store, "_probe", lambda: "ok")
    monkeypatch.setattr(store, "_snapshots", lambda host: snaps)
    got = store.list_snapshots("games/odin")["snapshots"]
    assert [e["id"][:2] for e in got] == ["01", "f0"]
    assert got[0]["time"] == got[1]["time"] == "2026-12-07T07:29:11Z"


def test_a_long_listing_is_cut_to_the_newest_and_says_so(monkeypatch):
    monkeypatch.setattr(store, "_probe", lambda: "ok")
    monkeypatch.setattr(store, "_snapshots", lambda host: SNAPS)
    got = store.list_snapshots("games/odin", limit=2)
    assert [e["id"][:2] for e in got["snapshots"]] == ["03", "02"] and got["complete"] is False


def test_no_repository_is_no_word_at_all(monkeypatch):
    monkeypatch.setattr(store, "_probe", lambda: "missing")
    got = store.list_snapshots("games/odin")
    assert got == {"host": "games/odin", "snapshots": [], "complete": False, "missing": True}


def test_peon_store_list_prints_one_line_and_vouches_for_it(monkeypatch, capsys):
    monkeypatch.setattr(store, "_probe", lambda: "ok")
    monkeypatch.setattr(store, "_snapshots", lambda host: SNAPS * 200)  # far over 4096 bytes
    said = []
    monkeypatch.setattr(jobs_main, "_termination_message", said.append)
    assert jobs_main.main(["store", "list", "--host", "games/odin"]) == 0
    line = capsys.readouterr().out.rstrip("\n")
    assert "\n" not in line and len(line) > 100_000
    summary = json.loads(said[0])
    assert len(said[0]) < 4096
    assert summary == {"count": 600, "bytes": len(line.encode()),
                       "sha256": hashlib.sha256(line.encode()).hexdigest()}


def test_a_backup_is_tagged_with_what_a_listing_reads_back():
    assert store.tags("b1", "Scheduled", "valheim", "reg.example/a,b:1") == [
        "--tag", "peon.dev/backup=b1", "--tag", "peon.dev/reason=Scheduled",
        "--tag", "peon.dev/game=valheim", "--tag", "peon.dev/image=reg.example/ab:1"]
    assert store.tags("b1") == ["--tag", "peon.dev/backup=b1"]
    assert len(store.tags("b1", image="x" * 2000)[-1]) == len("peon.dev/image=") + store.TAG_LIMIT


def _restic_answers(monkeypatch, init_code: int, probes: list[str]):
    """restic faked: `init` exits with INIT_CODE, each probe answers the next of PROBES."""
    import subprocess
    ran = []
    monkeypatch.setattr(store, "_probe", lambda: probes.pop(0))
    monkeypatch.setattr(store, "_restic", lambda *a, **k: ran.append(a) or subprocess.CompletedProcess(
        a, init_code, "", "" if init_code == 0 else "Fatal: create key in repository at s3:x failed: "
        "repository master key and config already initialized\n"))
    return ran


def test_a_missing_repository_is_made_when_asked_and_the_listing_still_says_nothing(monkeypatch):
    ran = _restic_answers(monkeypatch, 0, ["missing"])
    got = store.list_snapshots("games/odin", create=True)
    assert ran == [("init", "--quiet")]
    # No word on what the store holds: the operator removes nothing on this listing.
    assert got == {"host": "games/odin", "snapshots": [], "complete": False, "created": True}


def test_a_repository_another_run_made_meanwhile_is_taken(monkeypatch):
    # The listing and the server's first backup both found it missing; the backup made it first.
    _restic_answers(monkeypatch, 1, ["missing", "ok"])
    assert store.list_snapshots("games/odin", create=True)["created"] is True


def test_a_repository_that_cannot_be_made_is_said(monkeypatch):
    import pytest
    _restic_answers(monkeypatch, 1, ["missing", "missing"])
    with pytest.raises(store.StoreError, match="cannot create the repository"):
        store.list_snapshots("games/odin", create=True)


def test_peon_store_list_create_makes_the_repository(monkeypatch, capsys):
    ran = _restic_answers(monkeypatch, 0, ["missing"])
    monkeypatch.setattr(jobs_main, "_termination_message", lambda line: None)
    assert jobs_main.main(["store", "list", "--host", "games/odin", "--create"]) == 0
    assert ran == [("init", "--quiet")]
    assert json.loads(capsys.readouterr().out)["created"] is True
