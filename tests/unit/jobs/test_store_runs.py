"""How `peon store backup|restore` run restic (issue 26, item 6: fewer runs of restic, each of
which derives the repository's key again): a backup or a restore is its own probe, watched only
until restic starts on the world; a restore told the world's size runs no `stats` first. restic
here is a script on PATH that logs its arguments and plays a scenario."""
import json
import os
import sys
import textwrap
import time

import pytest

from peon import commands as cli
from peon.jobs import main as jobs_main
from peon.jobs import store

SNAP = "ab" * 32
STATUS = '{"message_type":"status","percent_done":0.5}'

FAKE = textwrap.dedent("""\
    #!PYTHON
    import json, os, sys, time
    args = sys.argv[1:]
    with open(os.environ["FAKE_RESTIC_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    with open(os.environ["FAKE_RESTIC_LOG"] + ".env", "a") as log:
        log.write(json.dumps({k: os.environ.get(k) for k in ("GOGC", "RESTIC_PROGRESS_FPS")}) + "\\n")
    scenario = json.load(open(os.environ["FAKE_RESTIC_SCENARIO"]))
    sub = next(a for a in args if not a.startswith("-"))
    counts = os.environ["FAKE_RESTIC_LOG"] + "." + sub
    n = len(open(counts).read()) if os.path.exists(counts) else 0
    open(counts, "a").write("x")
    steps = scenario.get(sub, [{"exit": 0}])
    for step in steps[min(n, len(steps) - 1)]["do"] if "do" in steps[min(n, len(steps) - 1)] else []:
        kind, value = step
        if kind == "out":
            print(value, flush=True)
        elif kind == "err":
            print(value, file=sys.stderr, flush=True)
        elif kind == "sleep":
            time.sleep(value)
    sys.exit(steps[min(n, len(steps) - 1)].get("exit", 0))
""").replace("PYTHON", sys.executable)


@pytest.fixture
def restic(tmp_path, monkeypatch):
    """Write a scenario {subcommand: [run, run, ...]} (each run: {"do": [[kind, value], ...],
    "exit": code}; the last run repeats); returns the list of argument lists restic got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "restic"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "restic.log"
    scenario = tmp_path / "scenario.json"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_RESTIC_LOG", str(log))
    monkeypatch.setenv("FAKE_RESTIC_SCENARIO", str(scenario))
    monkeypatch.setenv("RESTIC_REPOSITORY", "s3:http://127.0.0.1:9/b/games/odin")

    class Restic:
        def play(self, **runs):
            scenario.write_text(json.dumps(runs))

        @property
        def calls(self):
            if not log.exists():
                return []
            return [json.loads(line) for line in log.read_text().splitlines()]

        @property
        def environments(self):
            return [json.loads(line) for line in (tmp_path / "restic.log.env").read_text().splitlines()]

        def commands(self):
            return [next(a for a in c if not a.startswith("-")) for c in self.calls]
    return Restic()


def summary(**extra):
    return json.dumps({"message_type": "summary", "snapshot_id": SNAP, "total_files_processed": 3,
                       "total_bytes_processed": 3000, "data_added_packed": 1200, **extra})


def world(tmp_path):
    w = tmp_path / "data"
    w.mkdir(parents=True)
    (w / "world.db").write_bytes(b"w" * 3000)
    return w


# --- backup -----------------------------------------------------------------------------------

def test_a_backup_into_a_repository_that_is_there_runs_restic_once(restic, tmp_path):
    restic.play(backup=[{"do": [["out", STATUS], ["out", summary()]]}])
    got = store.backup(str(world(tmp_path)), "games/odin", "b1", "Scheduled")
    assert (got.snapshot, got.size, got.added, got.files) == (SNAP, 3000, 1200, 3)
    assert restic.commands() == ["backup"]  # no `cat config` first: the key is derived once
    assert "--json" in restic.calls[0] and "peon.dev/reason=Scheduled" in restic.calls[0]


def test_restic_runs_with_fewer_collections_and_status_lines_and_no_scanner(restic, tmp_path,
                                                                             monkeypatch):
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("RESTIC_PROGRESS_FPS", raising=False)
    restic.play(backup=[{"do": [["out", summary()]]}])
    store.backup(str(world(tmp_path)), "games/odin", "b1")
    assert restic.environments == [{"GOGC": "200", "RESTIC_PROGRESS_FPS": "1"}]
    assert "--no-scan" in restic.calls[0]


def test_what_the_environment_sets_for_restic_wins():
    assert store.restic_env({"GOGC": "50", "PATH": "/bin"}) == {
        "GOGC": "50", "RESTIC_PROGRESS_FPS": "1", "PATH": "/bin"}


def test_a_servers_first_backup_creates_the_repository_then_backs_up(restic, tmp_path):
    restic.play(backup=[{"do": [["err", "Fatal: repository does not exist: unable to open config "
                                        "file: Stat: The specified key does not exist."]],
                         "exit": 10},
                        {"do": [["out", STATUS], ["out", summary()]]}],
                init=[{"exit": 0}])
    assert store.backup(str(world(tmp_path)), "games/odin", "b1").snapshot == SNAP
    assert restic.commands() == ["backup", "init", "backup"]


def test_a_repository_that_init_made_but_restic_cannot_find_fails(restic, tmp_path):
    restic.play(backup=[{"do": [["err", "Fatal: repository does not exist"]], "exit": 10}],
                init=[{"exit": 0}])
    with pytest.raises(store.StoreError, match="created, yet restic does not find it"):
        store.backup(str(world(tmp_path)), "games/odin", "b1")
    assert restic.commands() == ["backup", "init", "backup"]


def test_an_unreachable_store_ends_the_backup_at_restics_first_word(restic, tmp_path):
    restic.play(backup=[{"do": [["err", "Load(<config/0000000000>, 0, 0) returned error, retrying "
                                        "after 720ms: dial tcp 127.0.0.1:9: connect: connection refused"],
                                ["sleep", 30]], "exit": 1}])
    t0 = time.monotonic()
    with pytest.raises(store.StoreError, match="the store cannot be reached"):
        store.backup(str(world(tmp_path)), "games/odin", "b1")
    assert time.monotonic() - t0 < 10
    assert restic.commands() == ["backup"]  # no init on an unreachable store


def test_a_store_that_says_nothing_is_unreachable_after_the_probe_time(restic, tmp_path, monkeypatch):
    monkeypatch.setenv("PEON_STORE_PROBE_SECONDS", "1")
    restic.play(backup=[{"do": [["sleep", 30]]}])
    t0 = time.monotonic()
    with pytest.raises(store.StoreError, match="no answer within 1 s"):
        store.backup(str(world(tmp_path)), "games/odin", "b1")
    assert time.monotonic() - t0 < 10


def test_a_backup_that_has_started_may_take_longer_than_the_probe_time(restic, tmp_path, monkeypatch):
    """The watch ends at restic's first progress line: a big world takes as long as it needs,
    and a store that stalls mid-upload is restic's to retry, not the probe's to end."""
    monkeypatch.setenv("PEON_STORE_PROBE_SECONDS", "1")
    restic.play(backup=[{"do": [["out", STATUS], ["sleep", 1.5],
                                ["err", "Save(<data/0a1b>) returned error, retrying after 1s: "
                                        "connection refused"],
                                ["out", STATUS], ["out", summary()]]}])
    assert store.backup(str(world(tmp_path)), "games/odin", "b1").snapshot == SNAP


def test_a_wrong_password_and_refused_keys_are_said(restic, tmp_path, monkeypatch):
    monkeypatch.setenv("RESTIC_PASSWORD", "s3cret-pass")
    restic.play(backup=[{"do": [["err", "Fatal: wrong password or no key found"], ["sleep", 30]],
                         "exit": 12}])
    with pytest.raises(store.StoreError, match="encryption password") as e:
        store.backup(str(world(tmp_path)), "games/odin", "b1")
    assert "s3cret-pass" not in str(e.value)
    restic.play(backup=[{"do": [["err", "Stat: Access Denied."], ["sleep", 30]], "exit": 1}])
    with pytest.raises(store.StoreError, match="refused the credentials"):
        store.backup(str(world(tmp_path / "x")), "games/odin", "b1")


def test_a_backup_that_could_not_read_a_file_is_removed(restic, tmp_path):
    error = json.dumps({"message_type": "error", "item": "/data/locked.db",
                        "error": {"message": "permission denied"}})
    restic.play(backup=[{"do": [["out", STATUS], ["out", error], ["out", summary()]], "exit": 3}],
                forget=[{"exit": 0}])
    with pytest.raises(store.StoreError, match="cannot read /data/locked.db .*snapshot was removed"):
        store.backup(str(world(tmp_path)), "games/odin", "b1")
    assert restic.calls[-1][-1] == SNAP and restic.commands() == ["backup", "forget"]


# --- restore ----------------------------------------------------------------------------------

def test_a_restore_told_the_size_runs_restic_once_and_swaps_the_world(restic, tmp_path, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.db").write_text("the old world")
    restic.play(restore=[{"do": [["out", STATUS]]}])
    written = []

    def fake_restore_writes(run_watched):
        def run(command, until_output=False):
            got = run_watched(command, until_output)
            staging = command[command.index("--target") + 1]
            with open(os.path.join(staging, "new.db"), "w") as f:
                f.write("the new world")
            written.append(staging)
            return got
        return run
    monkeypatch.setattr(store, "_run_watched", fake_restore_writes(store._run_watched))
    got = store.restore(SNAP, "/data", str(target), size=13)
    assert restic.commands() == ["restore"]  # no `stats` first
    call = restic.calls[0]
    assert f"{SNAP}:/data" in call and "--json" in call and "--verify" not in call
    assert sorted(os.listdir(target)) == ["new.db"] and got.size == 13
    assert written[0].startswith(str(target / ".peon-staging-"))


def test_a_restore_without_the_size_reads_it_with_stats_first(restic, tmp_path):
    restic.play(stats=[{"do": [["out", '{"total_size":13,"total_file_count":1}']]}],
                restore=[{"do": [["out", STATUS]]}])
    got = store.restore(SNAP, "/data", str(tmp_path / "target"))
    assert restic.commands() == ["stats", "restore"] and got.size == 13


def test_a_world_too_big_for_the_volume_is_refused_before_restic_writes(restic, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.db").write_text("the old world")
    with pytest.raises(Exception, match="space"):
        store.restore(SNAP, "/data", str(target), size=1 << 60)
    assert restic.calls == [] and os.listdir(target) == ["old.db"]


@pytest.mark.parametrize("stderr,exit_code,said", [
    ("Fatal: wrong password or no key found", 12, "encryption password"),
    ("dial tcp 127.0.0.1:9: connect: connection refused", 1, "cannot be reached"),
    ("Fatal: repository does not exist: unable to open config file", 10, "is not there, or lacks"),
    ("Load(<data/0a1b>, 0, 0) failed: ciphertext verification failed", 1, "damaged"),
])
def test_a_restore_that_fails_leaves_the_world_as_it_was(restic, tmp_path, stderr, exit_code, said):
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.db").write_text("the old world")
    # the damaged pack is met mid-restore, after restic has started: restic's own failure
    steps = [["out", STATUS], ["err", stderr]] if "ciphertext" in stderr else [["err", stderr], ["sleep", 30]]
    restic.play(restore=[{"do": steps, "exit": exit_code}])
    t0 = time.monotonic()
    with pytest.raises(store.StoreError, match=said) as e:
        store.restore(SNAP, "/data", str(target), size=13)
    assert time.monotonic() - t0 < 10
    assert "the world is as it was" in str(e.value)
    assert os.listdir(target) == ["old.db"]  # no staging left, the old world untouched


def test_a_negative_size_is_refused(restic, tmp_path):
    with pytest.raises(store.StoreError, match="cannot be -1 bytes"):
        store.restore(SNAP, "/data", str(tmp_path), size=-1)
    assert restic.calls == []


def test_peon_store_restore_passes_the_size(monkeypatch):
    got = []
    monkeypatch.setattr(store, "restore", lambda *a: got.append(a) or store.Result(snapshot=a[0]))
    monkeypatch.setattr(jobs_main, "_termination_message", lambda text: None)
    assert cli.main(["store", "restore", SNAP, "/data", "/data", "--size", "4096"]) == 0
    assert cli.main(["store", "restore", SNAP, "/data", "/data"]) == 0
    assert got == [(SNAP, "/data", "/data", 4096), (SNAP, "/data", "/data", None)]
