"""Backups listed back from the store (store_listing.py), driven through the in-memory API: the
listing's Job, the objects made for the snapshots no backup names, no duplicates, the ones whose
snapshot left the store removed, and a listing that cannot be trusted changing nothing."""
import hashlib
import json

import pytest

from fake_kube import FakeKube
from fixtures import gameserver

from peon.operator import store_listing as sl
from peon.operator.backup_reconciler import BackupReconciler
from peon.operator.cache import Cache
from peon.operator.workqueue import WorkQueue
from peon.shared import backup as bk

REPO = "s3:http://10.89.0.1:8333/peon/games/odin"
STORE = {"s3": {"endpoint": "http://10.89.0.1:8333", "bucket": "peon"},
         "secretRef": {"name": "store-keys"}}


def snap(n: int, name: str, **more):
    return {"id": f"{n:02x}" * 32, "time": f"2026-12-0{n}T03:00:00Z", "name": name,
            "path": "/data", **more}


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def bed():
    kube, cache = FakeKube(), Cache()
    gs = gameserver(backup={"store": STORE})
    gs["metadata"].update(resourceVersion="1", labels={"team": "vikings"})
    kube.objects[("GameServer", "games", "odin")] = gs
    cache.put(cache.gameservers, ("games", "odin"), gs, False)
    cache.put_secret("games", {"metadata": {"name": "store-keys", "resourceVersion": "1"},
                               "data": {k: "eA==" for k in bk.STORE_SECRET_KEYS}}, False)
    listing = sl.StoreListing(kube, cache, WorkQueue(), "peon.invalid/job:1", interval=3600,
                              at_once=2)
    listing.clock = Clock()
    return kube, cache, listing


def run_listing(kube, cache, listing, snapshots, complete=True, log=None, summary=None, **more):
    """One listing: its Job made, run (as the kubelet would) and read. Returns the look's
    requeue."""
    assert listing.reconcile("games", "odin") == sl.POLL
    job = kube.objects[("Job", "games", "odin-store-list")]
    line = json.dumps({"host": "games/odin", "snapshots": snapshots, "complete": complete, **more},
                      separators=(",", ":")).encode()
    summary = summary or {"count": len(snapshots), "bytes": len(line),
                          "sha256": hashlib.sha256(line).hexdigest()}
    kube.objects[("Pod", "games", "odin-store-list-x")] = {
        "metadata": {"name": "odin-store-list-x", "namespace": "games",
                     "labels": {"job-name": "odin-store-list"}},
        "status": {"containerStatuses": [{"name": "store", "state": {"terminated": {
            "exitCode": 0, "message": json.dumps(summary)}}}]}}
    asked = []
    listing.read_log = lambda ns, pod, limit: asked.append((ns, pod, limit)) or (
        log if log is not None else b"some line restic wrote\n" + line + b"\n")
    job["status"] = {"completionTime": "2026-12-06T10:00:00Z",
                     "conditions": [{"type": "Complete", "status": "True"}]}
    cache.put(cache.jobs, ("games", "odin-store-list"), job, False)
    again = listing.reconcile("games", "odin")
    assert asked == [("games", "odin-store-list-x", sl.LOG_LIMIT)]
    assert ("Job", "games", "odin-store-list") not in kube.objects  # deleted once read
    assert ("games", "odin-store-list") not in cache.jobs
    kube.objects.pop(("Pod", "games", "odin-store-list-x"))
    return again


def sync_backups(kube, cache):
    for (kind, ns, name), obj in kube.objects.items():
        if kind == "GameServerBackup":
            cache.put(cache.backups, (ns, name), obj, False)
    for key in [k for k in cache.backups if ("GameServerBackup", *k) not in kube.objects]:
        cache.put(cache.backups, key, cache.backups[key], True)


def backup(kube, cache, name, **status):
    run = bk.backup_object(kube.objects[("GameServer", "games", "odin")], name, bk.SCHEDULED)
    run["metadata"].update(resourceVersion="1", uid=f"uid-{name}")
    run["status"] = status
    kube.objects[("GameServerBackup", "games", name)] = run
    cache.put(cache.backups, ("games", name), run, False)


def test_the_listing_job_lists_with_the_stores_keys_and_nothing_else(bed):
    kube, cache, listing = bed
    assert listing.reconcile("games", "odin") == sl.POLL
    job = kube.objects[("Job", "games", "odin-store-list")]
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    # It makes the repository when it is not there, ahead of the server's first backup.
    assert c["command"] == ["peon", "store", "list", "--host", "games/odin", "--create"]
    assert c["envFrom"] == [{"secretRef": {"name": "store-keys"}}]
    assert {"name": "RESTIC_REPOSITORY", "value": REPO} in c["env"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False and "volumeMounts" in c
    assert not any(v.get("persistentVolumeClaim") for v in pod["volumes"])  # no world
    # Its pod is not a game pod: the server's status and restores never wait on it.
    assert "peon.dev/gameserver" not in job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "GameServer"
    assert job["spec"]["activeDeadlineSeconds"] == sl.DEADLINE
    cache.put(cache.jobs, ("games", "odin-store-list"), job, False)
    # One listing per server at a time: the next look waits for this one.
    assert listing.reconcile("games", "odin") == sl.POLL
    assert [c for c in kube.calls if c[:2] == ("create", "Job")] == [("create", "Job", "odin-store-list")]


def test_a_snapshot_with_no_object_gets_one_that_says_what_the_store_says(bed):
    kube, cache, listing = bed
    again = run_listing(kube, cache, listing, [
        snap(2, "odin-20261202-0300", reason="Scheduled", game="valheim",
             image="lloesche/valheim-server:v3", size=123456, files=42),
        snap(1, "odin-pre-update-ab12cd34", reason="BeforeUpdate")])
    assert again == 3600
    made = kube.objects[("GameServerBackup", "games", "odin-20261202-0300")]
    assert made["spec"] == {"gameServer": "odin", "reason": "Scheduled"}
    assert made["metadata"]["labels"] == {"peon.dev/gameserver": "odin", "team": "vikings",
                                          "peon.dev/found-in-store": "true"}
    st = made["status"]
    assert st["phase"] == "Succeeded" and st["snapshot"] == "02" * 32
    assert st["completionTime"] == "2026-12-02T03:00:00Z"
    assert (st["store"], st["storeSecret"]) == (REPO, "store-keys")
    assert (st["size"], st["files"], st["game"], st["serverImage"]) == \
        (123456, 42, "valheim", "lloesche/valheim-server:v3")
    assert st["image"] == "peon.invalid/job:1" and st["foundInStore"].endswith("Z")
    assert "storeRegion" not in st
    other = kube.objects[("GameServerBackup", "games", "odin-pre-update-ab12cd34")]
    assert other["spec"]["reason"] == "BeforeUpdate" and "size" not in other["status"]
    assert [e[1] for e in kube.events] == ["BackupsFoundInStore"]
    assert "2 backup objects" in kube.events[0][2]


def test_no_duplicates_of_a_snapshot_a_backup_records_or_is_recording(bed):
    kube, cache, listing = bed
    backup(kube, cache, "odin-20261201-0300", phase="Succeeded", snapshot="01" * 32, store=REPO)
    backup(kube, cache, "odin-20261202-0300", phase="Running")  # its Job is storing it now
    backup(kube, cache, "b1", phase="Succeeded", snapshot="99" * 32, store=REPO)  # another b1's
    run_listing(kube, cache, listing, [snap(1, "odin-20261201-0300"), snap(2, "odin-20261202-0300"),
                                       snap(3, "b1")])
    names = sorted(n for k, _, n in kube.objects if k == "GameServerBackup")
    assert names == ["b1", "b1-03030303", "odin-20261201-0300", "odin-20261202-0300"]
    assert kube.objects[("GameServerBackup", "games", "b1-03030303")]["status"]["snapshot"] == "03" * 32
    assert kube.objects[("GameServerBackup", "games", "odin-20261202-0300")]["status"] == \
        {"phase": "Running"}  # untouched: its own Job records its snapshot
    # The next listing, an hour on, finds nothing new: nothing is made twice.
    sync_backups(kube, cache)
    listing.clock.t += 3600
    before = len(kube.objects)
    run_listing(kube, cache, listing, [snap(1, "odin-20261201-0300"), snap(3, "b1")])
    assert len(kube.objects) == before


def test_a_snapshot_gone_from_the_store_takes_its_listed_back_object_only(bed):
    kube, cache, listing = bed
    run_listing(kube, cache, listing, [snap(1, "a1"), snap(2, "a2")])
    backup(kube, cache, "mine", phase="Succeeded", snapshot="0e" * 32, store=REPO)  # made here
    backup(kube, cache, "elsewhere", phase="Succeeded", snapshot="0f" * 32,
           store="s3:http://old/peon/games/odin")
    kube.objects[("GameServerBackup", "games", "elsewhere")]["metadata"]["labels"][
        "peon.dev/found-in-store"] = "true"
    for name in ("a1", "a2"):  # as the backup reconciler leaves them
        kube.objects[("GameServerBackup", "games", name)]["metadata"]["finalizers"] = [bk.FINALIZER_ARCHIVE]
    sync_backups(kube, cache)
    # An incomplete listing removes nothing.
    listing.clock.t += 3600
    run_listing(kube, cache, listing, [snap(2, "a2")], complete=False)
    assert ("GameServerBackup", "games", "a1") in kube.objects
    listing.clock.t += 3600
    kube.events.clear()
    run_listing(kube, cache, listing, [snap(2, "a2")])
    # a1's snapshot is gone: its finalizer goes first (nothing to forget), then the object.
    calls = [c for c in kube.calls if c[2] == "a1"]
    assert calls[-2:] == [("metadata", "GameServerBackup", "a1"), ("delete", "GameServerBackup", "a1")]
    remaining = sorted(n for k, _, n in kube.objects if k == "GameServerBackup")
    assert remaining == ["a2", "elsewhere", "mine"]
    assert [e[1] for e in kube.events] == ["BackupsGoneFromStore"]


def test_a_log_that_does_not_match_its_termination_message_changes_nothing(bed):
    kube, cache, listing = bed
    line = b'{"host":"games/odin","snapshots":[],"complete":true}'
    # cut short: the termination message vouches for a longer line than the log holds
    run_listing(kube, cache, listing, [snap(1, "a1")], log=b'{"host":"games/odin","snaps')
    assert not [k for k in kube.objects if k[0] == "GameServerBackup"]
    assert [e[:2] for e in kube.events] == [("Warning", "StoreListFailed")]
    assert "cut short" in kube.events[0][2]
    # The same failure again is not said again.
    listing.clock.t += 3600
    run_listing(kube, cache, listing, [snap(1, "a1")], log=line)
    assert len(kube.events) == 1


def test_a_failed_listing_says_why(bed):
    kube, cache, listing = bed
    listing.reconcile("games", "odin")
    job = kube.objects[("Job", "games", "odin-store-list")]
    kube.objects[("Pod", "games", "p")] = {
        "metadata": {"name": "p", "namespace": "games", "labels": {"job-name": "odin-store-list"}},
        "status": {"containerStatuses": [{"name": "store", "state": {"terminated": {
            "exitCode": 1, "message": json.dumps({"error": "cannot open the repository: the "
                                                  "encryption password does not open it"})}}}]}}
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    cache.put(cache.jobs, ("games", "odin-store-list"), job, False)
    assert listing.reconcile("games", "odin") == 3600
    assert kube.events == [("Warning", "StoreListFailed", "listing the backups in the store "
                            "failed: cannot open the repository: the encryption password does "
                            "not open it")]
    assert ("Job", "games", "odin-store-list") not in kube.objects


def test_listings_wait_their_turn_and_their_interval(bed):
    kube, cache, listing = bed
    for n in ("a", "b"):  # two other servers' listings run
        cache.put(cache.jobs, ("games", f"{n}-store-list"), {
            "metadata": {"name": f"{n}-store-list", "namespace": "games", "resourceVersion": "1",
                         "labels": {sl.LABEL_STORE_LIST: n}}, "status": {"active": 1}}, False)
    assert listing.reconcile("games", "odin") == sl.WAIT_TURN
    assert ("Job", "games", "odin-store-list") not in kube.objects
    cache.jobs.pop(("games", "a-store-list"))
    run_listing(kube, cache, listing, [])
    listing.clock.t += 600
    assert listing.reconcile("games", "odin") == pytest.approx(3000)  # not before the hour
    listing.note("games", "odin")  # a reconcile of the server asks only before the first
    assert listing.queue.idle()


def test_a_server_without_a_store_or_its_keys_is_not_listed(bed):
    kube, cache, listing = bed
    cache.secrets.clear()
    assert listing.reconcile("games", "odin") is None
    gs = kube.objects[("GameServer", "games", "odin")]
    gs["spec"].pop("backup")
    cache.put(cache.gameservers, ("games", "odin"), {**gs, "metadata": {**gs["metadata"], "resourceVersion": "2"}}, False)
    assert listing.reconcile("games", "odin") is None
    assert not [c for c in kube.calls if c[0] == "create"]


def test_a_listing_is_checked_value_by_value():
    got = sl.parse_listing(json.dumps({"complete": True, "snapshots": [
        snap(1, "ok", reason="Sideways", image="has space", game="Bad_Game", size=-1, files=True),
        snap(2, "../etc"),                      # not a name: not made, but it is in the store
        {**snap(3, "other"), "path": "/srv"},   # another folder: no restore Job can put it back
        {"id": "nothex", "time": "2026-12-01T00:00:00Z", "name": "x", "path": "/data"}]}))
    assert [s.name for s in got.snapshots] == ["ok"]
    s = got.snapshots[0]
    assert (s.reason, s.image, s.game, s.size, s.files) == ("Manual", None, None, None, None)
    assert got.ids == {"01" * 32, "02" * 32, "03" * 32}
    assert got.complete is False  # an entry it could not read: nothing may be removed
    with pytest.raises(sl.ListingError):
        sl.parse_listing(b"[1, 2]")


def test_the_backup_reconciler_starts_no_job_for_a_listed_back_object(bed):
    kube, cache, _ = bed
    run = bk.backup_object(kube.objects[("GameServer", "games", "odin")], "found", bk.MANUAL,
                           {bk.LABEL_FOUND_IN_STORE: "true"})
    run["metadata"].update(resourceVersion="1", uid="uid-found")
    kube.objects[("GameServerBackup", "games", "found")] = run
    cache.put(cache.backups, ("games", "found"), run, False)
    BackupReconciler(kube, cache, WorkQueue(), "peon:1").reconcile("games", "found")
    assert not [c for c in kube.calls if c[1] == "Job"]
    # It is held like any backup: deleting it forgets its snapshot.
    assert bk.FINALIZER_ARCHIVE in kube.objects[("GameServerBackup", "games", "found")]["metadata"]["finalizers"]


def test_a_store_backup_tags_its_snapshot_with_reason_game_and_the_running_image(bed):
    kube, cache, _ = bed
    cache.put(cache.children, ("Deployment", "games", "odin"), {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "odin", "namespace": "games", "resourceVersion": "1"},
        "spec": {"template": {"spec": {"containers": [{"name": "server",
                                                       "image": "lloesche/valheim-server:v3"}]}}}},
        False)
    backup(kube, cache, "b1")
    BackupReconciler(kube, cache, WorkQueue(), "peon:1").reconcile("games", "b1")
    cmd = kube.objects[("Job", "games", "b1-backup")]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd == ["peon", "store", "backup", "/data", "--host", "games/odin", "--name", "b1",
                   "--reason", "Scheduled", "--game", "valheim",
                   "--image", "lloesche/valheim-server:v3"]


def test_the_controller_lists_a_server_with_a_store_once_after_its_start():
    from fixtures import game, queued
    from peon.operator.controller import Controller
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1", store_list_interval=600)
    c.cache.put(c.cache.games, "valheim", game(), False)
    gs = gameserver(backup={"store": STORE})
    kube.objects[("GameServer", "games", "odin")] = gs
    c.cache.put(c.cache.gameservers, ("games", "odin"), gs, False)
    kube.objects[("Secret", "games", "store-keys")] = {
        "metadata": {"name": "store-keys", "namespace": "games", "resourceVersion": "1"},
        "data": {k: "eA==" for k in bk.STORE_SECRET_KEYS}}
    c.reconcile(("GameServer", "games", "odin"))
    assert (sl.KIND, "games", "odin") in queued(c)
    assert c.reconcile((sl.KIND, "games", "odin")) == sl.POLL
    assert ("Job", "games", "odin-store-list") in kube.objects
    assert c.listing.interval == 600


def test_a_server_that_asks_for_a_seed_is_not_given_a_repository(bed):
    # A seed from a repository that is not there must say so (a wrong bucket or prefix), not
    # find one the listing made and say "no snapshot".
    kube, cache, listing = bed
    gs = kube.objects[("GameServer", "games", "odin")]
    gs["spec"]["backup"]["store"] = {**STORE, "seed": "latest"}
    cache.put(cache.gameservers, ("games", "odin"), {**gs, "metadata": {**gs["metadata"], "resourceVersion": "2"}}, False)
    assert listing.reconcile("games", "odin") == sl.POLL
    c = kube.objects[("Job", "games", "odin-store-list")]["spec"]["template"]["spec"]["containers"][0]
    assert "--create" not in c["command"]


def test_a_listing_that_made_the_repository_says_so_and_removes_nothing(bed):
    kube, cache, listing = bed
    run_listing(kube, cache, listing, [snap(1, "odin-20261201-0300")])
    sync_backups(kube, cache)
    kube.events.clear()
    listing.clock.t += 3600
    # The store was emptied (the repository gone) and the listing made it again: no word on
    # what it held, so the listed-back object stays (a later, whole listing removes it).
    run_listing(kube, cache, listing, [], complete=True, created=True)
    assert ("GameServerBackup", "games", "odin-20261201-0300") in kube.objects
    assert kube.events == [("Normal", "StoreRepositoryCreated",
                            f"made the repository {REPO} for the server's backups")]


def test_a_store_backup_and_a_listing_of_its_server_never_run_at_once(bed):
    # Either may create the repository, and two restic inits at once on S3 could leave one
    # that neither opens: each waits for the other's Job to end.
    from peon.operator import backup_reconciler as br
    kube, cache, listing = bed
    backups = BackupReconciler(kube, cache, WorkQueue(), "peon:1")
    assert listing.reconcile("games", "odin") == sl.POLL
    cache.put(cache.jobs, ("games", "odin-store-list"), kube.objects[("Job", "games", "odin-store-list")], False)
    backup(kube, cache, "b1")
    assert backups.reconcile("games", "b1") == br.LISTING_WAIT
    assert ("Job", "games", "b1-backup") not in kube.objects
    said = kube.objects[("GameServerBackup", "games", "b1")]["status"]["message"]
    assert said == "waiting for the server's store listing (odin-store-list) to end"
    # The listing ends: the backup starts, and the next listing waits for it.
    run_listing_end = kube.objects[("Job", "games", "odin-store-list")]
    run_listing_end["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    cache.put(cache.jobs, ("games", "odin-store-list"), run_listing_end, False)
    listing.reconcile("games", "odin")  # read (it failed), deleted
    sync_backups(kube, cache)
    assert backups.reconcile("games", "b1") is None
    job = kube.objects[("Job", "games", "b1-backup")]
    cache.put(cache.jobs, ("games", "b1-backup"), job, False)
    sync_backups(kube, cache)
    listing.clock.t += 3600
    assert listing.reconcile("games", "odin") == sl.WAIT_TURN
    assert ("Job", "games", "odin-store-list") not in kube.objects

    # Its Job done, the next listing starts.
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    cache.put(cache.jobs, ("games", "b1-backup"), {**job, "metadata": {**job["metadata"], "resourceVersion": "99"}}, False)
    assert listing.reconcile("games", "odin") == sl.POLL
    assert ("Job", "games", "odin-store-list") in kube.objects


def test_a_listing_does_not_start_while_a_backup_of_its_server_is_starting(bed):
    # The backup holds the server's turn from its look for a listing to its Job in the cache
    # (its hooks included): a listing meanwhile asks again later, and makes no Job.
    kube, cache, listing = bed
    with listing.turns.of("games", "odin"):
        assert listing.reconcile("games", "odin") == sl.WAIT_TURN
    assert ("Job", "games", "odin-store-list") not in kube.objects
    assert listing.reconcile("games", "odin") == sl.POLL


def test_the_controllers_listing_and_backups_share_their_turns():
    from peon.operator.controller import Controller
    c = Controller(FakeKube(), workers=1, job_image="peon.invalid/job:1")
    assert c.backups.turns is c.listing.turns
