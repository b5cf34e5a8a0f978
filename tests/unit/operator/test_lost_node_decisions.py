"""A lost node (issue 26, item 3): the pure decisions of operator/lost_node.py, and the
GameServer reconcile acting on them through the in-memory API."""
import base64
import datetime as dt
import json

import pytest

from fake_kube import FakeKube
from fixtures import game, gameserver

from peon.operator import lost_node as ln
from peon.operator.controller import Controller
from peon.shared import clock, status as st
from peon.shared.model import InvalidSpec, parse_gameserver, parse_recover_after

NOW = dt.datetime(2026, 12, 7, 1, 0, 0, tzinfo=dt.timezone.utc)
STORE = {"s3": {"endpoint": "https://s3.example", "bucket": "worlds"}, "secretRef": {"name": "keys"}}


def iso(seconds_ago: float) -> str:
    return clock.iso(NOW - dt.timedelta(seconds=seconds_ago))


def node(name: str, ready: str = "True", since: float = 600) -> dict:
    return {"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Ready", "status": ready, "lastTransitionTime": iso(since)}]}}


def local_pv(name: str, on: str | None) -> dict:
    spec = {"hostPath": {"path": f"/var/pv/{name}"}}
    if on is not None:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [on]}]}]}}
    return {"metadata": {"name": name}, "spec": spec}


def pod(name: str, on: str, ready: bool = False, made: float = 3600) -> dict:
    return {"metadata": {"name": name, "namespace": "games", "labels": {"peon.dev/gameserver": "odin"},
                         "creationTimestamp": iso(made), "resourceVersion": "5"},
            "spec": {"nodeName": on},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": iso(100)}]}}


# --- pure ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400),
                                          ("2h", 7200), ("1m5s", 65), (None, None)])
def test_recover_after_is_a_duration_in_seconds(text, seconds):
    assert parse_recover_after(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "5", "1d", "5 m", "-5m", "m"])
def test_recover_after_that_is_no_duration_is_refused(text):
    with pytest.raises(InvalidSpec) as e:
        parse_recover_after(text)
    assert e.value.reason == "InvalidStorage" and "recoverAfter" in e.value.message


def test_a_gameserver_carries_its_recover_after():
    gs = parse_gameserver(gameserver(storage={"recoverAfter": "2m"}))
    assert gs.storage.recover_after == 120.0
    assert parse_gameserver(gameserver()).storage.recover_after is None


def test_a_node_is_lost_since_its_ready_condition_turned_or_since_its_pod_did_when_gone():
    assert ln.lost_since(node("a"), "a", None, NOW) is None
    assert ln.lost_since(node("a", "Unknown", 90), "a", None, NOW) == NOW - dt.timedelta(seconds=90)
    assert ln.lost_since(node("a", "False", 5), "a", None, NOW) == NOW - dt.timedelta(seconds=5)
    assert ln.lost_since(None, "a", pod("p", "a"), NOW) == NOW - dt.timedelta(seconds=100)
    assert ln.lost_since(None, "a", None, NOW) == NOW
    never = {"metadata": {"name": "a", "creationTimestamp": iso(300)}, "status": {}}
    assert ln.lost_since(never, "a", None, NOW) == NOW - dt.timedelta(seconds=300)


def test_a_volume_with_node_affinity_is_bound_and_one_without_can_move():
    assert ln.pv_bound_node(local_pv("pv1", "real-node-1")) == "real-node-1"
    assert ln.pv_bound_node(local_pv("pv1", None)) is None
    assert ln.pv_bound_node(None) is None
    zonal = {"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1"]}]}]}}}}
    # a zonal network disk (EBS, PD, Azure Disk) attaches to another node of its zone: it moves,
    # and a rebuild from the store would lose the play since the snapshot for nothing
    assert ln.pv_bound_node(zonal) is None
    assert ln.decide(facts(pv=zonal)).action == "reschedule"


def test_a_gone_node_whose_replacement_pod_waits_is_lost_since_that_pod_and_the_wait_ends():
    """The node deleted (its pods with it): the Deployment's new pod never ran, has no Ready
    condition and no node, only PodScheduled False. The loss counts from then, so the wait ends
    and the message stays the same from look to look."""
    waiting = {"metadata": {"name": "odin-new", "creationTimestamp": iso(45)},
               "spec": {}, "status": {"phase": "Pending", "conditions": [
                   {"type": "PodScheduled", "status": "False", "lastTransitionTime": iso(44)}]}}
    assert ln.lost_since(None, "a", waiting, NOW) == NOW - dt.timedelta(seconds=44)
    d = ln.decide(facts(node=None, pod=waiting))
    assert d.action == "rebuild"
    later = ln.decide(facts(node=None, pod=waiting, recover_after=60.0))
    again = ln.decide(facts(node=None, pod=waiting, recover_after=60.0,
                            now=NOW + dt.timedelta(seconds=5)))
    assert later.action == again.action == "wait" and later.message == again.message


def facts(**kw):
    base = dict(server="odin", recover_after=30.0, node_name="a", node=node("a", "Unknown", 60),
                pod=pod("p", "a"), claim="odin-data", pv=local_pv("pv1", "a"), has_store=True,
                snapshot="odin-b7", snapshot_time=iso(60 + 25 * 60), now=NOW)
    base.update(kw)
    return ln.Facts(**base)


def test_a_ready_node_needs_nothing():
    assert ln.decide(facts(node=node("a"))).action == "none"


def test_a_node_lost_for_less_than_recover_after_is_waited_for_until_it_is_due():
    d = ln.decide(facts(node=node("a", "Unknown", 10)))
    assert (d.action, d.reason) == ("wait", ln.Reason.WAITING)
    assert d.requeue == pytest.approx(20.0)
    assert "recoverAfter (30s)" in d.message


def test_a_node_bound_world_with_a_snapshot_is_rebuilt_and_the_lost_play_is_said():
    d = ln.decide(facts())
    assert (d.action, d.reason) == ("rebuild", ln.Reason.REBUILT)
    assert "odin-b7" in d.message and "25m0s of play before the loss" in d.message
    assert d.since == NOW - dt.timedelta(seconds=60)


def test_a_world_that_can_move_is_only_rescheduled_store_or_not():
    for store in (True, False):
        d = ln.decide(facts(pv=local_pv("pv1", None), has_store=store, snapshot=None))
        assert (d.action, d.reason) == ("reschedule", ln.Reason.RESCHEDULED)


def test_without_a_store_or_a_snapshot_a_node_bound_world_cannot_be_recovered():
    d = ln.decide(facts(has_store=False))
    assert (d.action, d.reason) == ("cannot", ln.Reason.NO_STORE)
    assert "no empty world is started" in d.message
    d = ln.decide(facts(snapshot=None, snapshot_time=None))
    assert (d.action, d.reason) == ("cannot", ln.Reason.NO_SNAPSHOT)


def test_a_gone_node_counts_from_when_its_pod_stopped_being_ready():
    assert ln.decide(facts(node=None)).action == "rebuild"  # pod not ready for 100 s > 30 s
    assert "gone" in ln.decide(facts(node=None)).message


def claim(name, annotations=None, labels=None):
    return {"metadata": {"name": name, "namespace": "games",
                         "labels": {"peon.dev/gameserver": "odin", **(labels or {})},
                         "annotations": annotations or {}}}


def recovered(name, **record):
    return claim(name, {ln.ANNOTATION_RECOVERED_FROM: json.dumps(record)})


def test_the_current_claim_is_the_newest_a_recovery_made():
    claims = [claim("odin-data"), recovered("odin-data-r2", lostNode="a"),
              recovered("odin-data-r3", lostNode="b")]
    assert ln.current_claim("odin", "odin-data", claims) == "odin-data-r3"
    assert ln.current_claim("odin", "odin-data", claims[:1]) == "odin-data"
    # A claim of that name that no recovery made (a person's) is not taken for one.
    assert ln.current_claim("odin", "odin-data", [claim("odin-data"), claim("odin-data-r2")]) == "odin-data"
    assert ln.next_claim_name("odin", claims) == "odin-data-r4"
    assert ln.next_claim_name("odin", claims[:1]) == "odin-data-r2"


def test_the_claims_are_found_by_name_without_a_scan():
    children = {("PersistentVolumeClaim", "games", n): claim(n)
                for n in ("odin-data", "odin-data-r2", "odin-data-r3", "odin-data-r5")}
    got = ln.server_claims(children, "games", "odin", "odin-data")
    assert [c["metadata"]["name"] for c in got] == ["odin-data", "odin-data-r2", "odin-data-r3"]


def test_recovery_status_comes_from_the_claims_alone_and_names_what_was_left_behind():
    left = claim("odin-data", {ln.ANNOTATION_LEFT_BEHIND: json.dumps(
        {"node": "a", "since": iso(60), "replacedBy": "odin-data-r2", "junk": 1})},
        {ln.LABEL_LEFT_BEHIND: "true"})
    new = recovered("odin-data-r2", fromClaim="odin-data", lostNode="a", lostSince=iso(60),
                    recoveredAt=iso(0), snapshot="odin-b7", snapshotTime=iso(3660))
    got = ln.recovery_status("odin", [left, new])
    assert got["claim"] == "odin-data-r2" and got["lostNode"] == "a" and got["snapshot"] == "odin-b7"
    assert "1h0m taken" not in got["message"] and "taken 1h0m before node a was lost" in got["message"]
    assert got["leftBehind"] == [{"claim": "odin-data", "node": "a", "since": iso(60),
                                  "replacedBy": "odin-data-r2"}]
    assert ln.recovery_status("odin", [left, new]) == got  # no clock in it: it never churns
    assert ln.recovery_status("odin", [claim("odin-data")]) is None


def test_only_the_pods_the_lost_node_held_before_the_move_are_stale():
    made = [recovered("odin-data-r2", lostNode="a", recoveredAt=iso(50))]
    old, later, elsewhere = pod("old", "a", made=600), pod("later", "a", made=10), pod("b", "b", made=600)
    assert ln.stale_pods([old, later, elsewhere], made) == [old]
    assert ln.stale_pods([old], []) == []


def test_the_children_move_to_the_recovery_claim():
    desired = [{"kind": "PersistentVolumeClaim", "metadata": {"name": "odin-data"}},
               {"kind": "Deployment", "metadata": {"name": "odin"}, "spec": {"template": {"spec": {
                   "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "odin-data"}},
                               {"name": "config", "configMap": {"name": "odin"}}]}}}}]
    out = ln.on_claim(desired, "odin-data-r2")
    assert [d["kind"] for d in out] == ["Deployment"]
    assert out[0]["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "odin-data-r2"}},
        {"name": "config", "configMap": {"name": "odin"}}]
    assert desired[1]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"][
        "claimName"] == "odin-data"  # the rendered children stay as rendered


# --- the reconcile -------------------------------------------------------------------------------

KEY = ("GameServer", "games", "odin")


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setattr(clock, "now", lambda: NOW)
    monkeypatch.setattr(st, "SETTLE_SECONDS", 0.0)  # every status is written at once here
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    g = game()
    g["metadata"]["generation"] = 1
    c.cache.put(c.cache.games, "valheim", g, False)
    c.cache.put_secret("games", {"metadata": {"name": "keys", "namespace": "games"}, "data": {
        k: base64.b64encode(b"x").decode()
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RESTIC_PASSWORD")}}, False)
    return kube, c


def serve(kube, c, store=True, snapshot=True, **storage):
    spec = {"storage": {"recoverAfter": "30s", **storage}}
    if store:
        spec["backup"] = {"store": STORE}
    gs = gameserver(**spec)
    if snapshot:
        gs["status"] = {"backup": {"lastOffsite": "odin-b7", "lastOffsiteTime": iso(60 + 25 * 60)}}
    kube.objects[KEY] = gs
    c.cache.put(c.cache.gameservers, KEY[1:], gs, False)
    c.reconcile(KEY)
    sync(kube, c)
    return gs


def sync(kube, c):
    """What the watches would bring: the stored GameServer and children into the cache."""
    c.cache.put(c.cache.gameservers, KEY[1:], kube.objects[KEY], False)
    for (kind, ns, name), obj in kube.objects.items():
        if kind in ("PersistentVolumeClaim", "Deployment", "Service", "Secret", "ConfigMap"):
            c.cache.put(c.cache.children, (kind, ns, name), obj, False)


def lose_node_a(kube, c, bound=True, for_seconds=60):
    """The world's claim bound to a PV (on node a, or movable), its pod on a, a NotReady."""
    claim_key = ("PersistentVolumeClaim", "games", "odin-data")
    kube.objects[claim_key]["spec"]["volumeName"] = "pv-a"
    kube.objects[("PersistentVolume", None, "pv-a")] = local_pv("pv-a", "a" if bound else None)
    kube.objects[("Node", None, "a")] = node("a", "Unknown", for_seconds)
    kube.objects[("Node", None, "b")] = node("b")
    p = pod("odin-abc", "a")
    kube.objects[("Pod", "games", "odin-abc")] = p
    c.cache.put(c.cache.pods, ("games", "odin-abc"), p, False)


def status(kube):
    return kube.objects[KEY].get("status") or {}


def cond(kube):
    return next(x for x in status(kube)["conditions"] if x["type"] == ln.CONDITION)


def test_a_node_bound_world_is_rebuilt_on_a_new_claim_seeded_from_the_store(world):
    kube, c = world
    serve(kube, c)
    lose_node_a(kube, c)
    kube.calls.clear()
    c.reconcile(KEY)
    new = kube.objects[("PersistentVolumeClaim", "games", "odin-data-r2")]
    record = json.loads(new["metadata"]["annotations"][ln.ANNOTATION_RECOVERED_FROM])
    assert record == {"fromClaim": "odin-data", "lostNode": "a", "lostSince": iso(60),
                      "recoveredAt": iso(0), "snapshot": "odin-b7", "snapshotTime": iso(1560)}
    assert new["metadata"]["labels"]["peon.dev/gameserver"] == "odin"
    assert new["spec"]["resources"] == kube.objects[("PersistentVolumeClaim", "games", "odin-data")][
        "spec"]["resources"]
    # The old claim is kept, labelled and annotated as left behind; never deleted.
    old = kube.objects[("PersistentVolumeClaim", "games", "odin-data")]
    assert old["metadata"]["labels"][ln.LABEL_LEFT_BEHIND] == "true"
    assert json.loads(old["metadata"]["annotations"][ln.ANNOTATION_LEFT_BEHIND])["replacedBy"] == "odin-data-r2"
    assert not [x for x in kube.calls if x[0] == "delete" and x[1] == "PersistentVolumeClaim"]
    # The Deployment's world is the new claim, and its seed step restores the newest snapshot.
    spec = kube.objects[("Deployment", "games", "odin")]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "odin-data-r2"}} in spec["volumes"]
    seed = next(i for i in spec["initContainers"] if i["name"] == "seed")
    assert seed["command"][:4] == ["peon", "store", "seed", "latest"]
    # The pod on the lost node goes at once (its kubelet cannot confirm), so Recreate goes on.
    assert ("delete", "Pod", "odin-abc", 0) in kube.calls
    reasons = [e[1] for e in kube.events]
    assert ln.Reason.REBUILT in reasons and ln.Reason.LEFT_BEHIND in reasons
    rebuilt = next(e for e in kube.events if e[1] == ln.Reason.REBUILT)
    assert rebuilt[0] == "Warning" and "odin-data-r2" in rebuilt[2] and "25m0s of play" in rebuilt[2]
    rec = status(kube)["recovery"]
    assert rec["claim"] == "odin-data-r2" and rec["leftBehind"][0]["claim"] == "odin-data"
    assert "taken 25m0s before node a was lost" in rec["message"]
    assert cond(kube)["status"] == "False"


def test_a_recovery_claim_name_someone_else_holds_is_not_taken_over(world):
    kube, c = world
    serve(kube, c)
    lose_node_a(kube, c)
    kube.objects[("PersistentVolumeClaim", "games", "odin-data-r2")] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "odin-data-r2", "namespace": "games", "labels": {"team": "ops"}},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    kube.calls.clear()
    c.reconcile(KEY)
    spec = kube.objects[("Deployment", "games", "odin")]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "odin-data"}} in spec["volumes"]
    old = kube.objects[("PersistentVolumeClaim", "games", "odin-data")]
    assert ln.LABEL_LEFT_BEHIND not in old["metadata"].get("labels", {})
    assert kube.objects[("PersistentVolumeClaim", "games", "odin-data-r2")]["metadata"][
        "labels"] == {"team": "ops"}
    assert cond(kube)["status"] == "True" and cond(kube)["reason"] == ln.Reason.CLAIM_TAKEN
    assert "odin-data-r2" in cond(kube)["message"]
    assert ln.Reason.REBUILT not in [e[1] for e in kube.events]


def test_a_users_existing_claim_is_left_behind_unlabelled_and_its_size_kept(world):
    kube, c = world
    mine = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "my-world", "namespace": "games",
                         "labels": {"peon.dev/gameserver": "odin"}},
            "spec": {"resources": {"requests": {"storage": "50Gi"}}}}
    kube.objects[("PersistentVolumeClaim", "games", "my-world")] = mine
    c.cache.put(c.cache.children, ("PersistentVolumeClaim", "games", "my-world"), mine, False)
    serve(kube, c, existingClaim="my-world")
    mine["spec"]["volumeName"] = "pv-a"
    kube.objects[("PersistentVolume", None, "pv-a")] = local_pv("pv-a", "a")
    kube.objects[("Node", None, "a")] = node("a", "Unknown", 60)
    p = pod("odin-abc", "a")
    kube.objects[("Pod", "games", "odin-abc")] = p
    c.cache.put(c.cache.pods, ("games", "odin-abc"), p, False)
    kube.calls.clear()
    c.reconcile(KEY)
    new = kube.objects[("PersistentVolumeClaim", "games", "odin-data-r2")]
    assert new["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert kube.objects[("PersistentVolumeClaim", "games", "my-world")]["metadata"]["labels"] == \
        {"peon.dev/gameserver": "odin"}
    assert not [x for x in kube.calls if x[1] == "PersistentVolumeClaim" and x[2] == "my-world"
                and x[0] != "get"]
    assert ln.Reason.LEFT_BEHIND in [e[1] for e in kube.events]


def test_when_the_node_comes_back_nothing_flaps(world):
    kube, c = world
    serve(kube, c)
    lose_node_a(kube, c)
    c.reconcile(KEY)
    sync(kube, c)
    c.cache.put(c.cache.pods, ("games", "odin-abc"), kube.objects.get(("Pod", "games", "odin-abc"))
                or pod("odin-abc", "a"), True)
    # The server runs on b; node a returns.
    c.cache.put(c.cache.pods, ("games", "odin-new"), pod("odin-new", "b", ready=True, made=5), False)
    kube.objects[("Node", None, "a")] = node("a", "True", 1)
    c.reconcile(KEY)
    sync(kube, c)
    kube.calls.clear()
    n_events = len(kube.events)
    for _ in range(3):
        c.reconcile(KEY)
        sync(kube, c)
    assert [x for x in kube.calls if x[0] != "get"] == []  # no write at all: nothing fights
    assert len(kube.events) == n_events
    assert status(kube)["recovery"]["claim"] == "odin-data-r2"
    assert ("PersistentVolumeClaim", "games", "odin-data") in kube.objects  # kept, unused
    spec = kube.objects[("Deployment", "games", "odin")]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "odin-data-r2"}} in spec["volumes"]
    # The old node's pod (if its kubelet had one) made before the move would go; none made after.
    c.cache.put(c.cache.pods, ("games", "odin-back"), pod("odin-back", "a", ready=True, made=-5), False)
    c.reconcile(KEY)
    assert not [x for x in kube.calls if x[0] == "delete"]


def test_backups_and_restores_use_the_claim_the_world_is_on(world):
    from peon.operator.runs import data_claim
    kube, c = world
    gs = serve(kube, c)
    assert data_claim(gs, c.cache) == "odin-data"
    lose_node_a(kube, c)
    c.reconcile(KEY)
    sync(kube, c)
    assert data_claim(gs, c.cache) == "odin-data-r2"


def test_a_node_lost_for_less_than_recover_after_is_waited_for(world):
    kube, c = world
    serve(kube, c)
    lose_node_a(kube, c, for_seconds=10)
    c.cache.put(c.cache.gameservers, KEY[1:], kube.objects[KEY], False)
    again = c.reconcile(KEY)
    assert again is not None and again <= 20.0
    assert ("PersistentVolumeClaim", "games", "odin-data-r2") not in kube.objects
    assert not [x for x in kube.calls if x[0] == "delete"]


def test_without_a_store_the_status_says_it_cannot_recover_and_nothing_starts(world):
    kube, c = world
    serve(kube, c, store=False, snapshot=False)
    lose_node_a(kube, c)
    c.reconcile(KEY)
    sync(kube, c)
    c.reconcile(KEY)
    assert ("PersistentVolumeClaim", "games", "odin-data-r2") not in kube.objects
    assert not [x for x in kube.calls if x[0] == "delete"]
    got = cond(kube)
    assert (got["status"], got["reason"]) == ("True", ln.Reason.NO_STORE)
    assert [e[1] for e in kube.events].count(ln.Reason.NO_STORE) == 1  # said once


def test_a_world_that_can_move_is_only_rescheduled(world):
    kube, c = world
    serve(kube, c)
    lose_node_a(kube, c, bound=False)
    c.reconcile(KEY)
    assert ("PersistentVolumeClaim", "games", "odin-data-r2") not in kube.objects
    assert ("delete", "Pod", "odin-abc", 0) in kube.calls
    assert [e[1] for e in kube.events].count(ln.Reason.RESCHEDULED) == 1
    spec = kube.objects[("Deployment", "games", "odin")]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "odin-data"}} in spec["volumes"]
    # A pod placed on the lost node after it was lost (one that tolerates everything) stays:
    # no delete loop.
    kube.calls.clear()
    late = pod("odin-late", "a", made=30)
    kube.objects[("Pod", "games", "odin-late")] = late
    c.cache.put(c.cache.pods, ("games", "odin-late"), late, False)
    c.reconcile(KEY)
    assert not [x for x in kube.calls if x[0] == "delete"]
    assert [e[1] for e in kube.events].count(ln.Reason.RESCHEDULED) == 1


def test_a_server_that_did_not_opt_in_reads_no_node(world):
    kube, c = world
    gs = gameserver()
    kube.objects[KEY] = gs
    c.cache.put(c.cache.gameservers, KEY[1:], gs, False)
    c.reconcile(KEY)
    sync(kube, c)
    lose_node_a(kube, c)
    kube.calls.clear()
    c.reconcile(KEY)
    assert not [x for x in kube.calls if x[1] in ("Node", "PersistentVolume")]
    assert "recovery" not in status(kube)


def test_a_maintenance_hold_does_not_hold_the_move_off_a_lost_node(world):
    """spec.maintenance holds a restart while players may be on; a pod on a lost node is not
    ready, so the Deployment has no ready replica and the move is applied at once."""
    kube, c = world
    gs = gameserver(storage={"recoverAfter": "30s"}, backup={"store": STORE},
                    maintenance={"maxDelay": "6h"})
    gs["status"] = {"backup": {"lastOffsite": "odin-b7", "lastOffsiteTime": iso(1560)}}
    kube.objects[KEY] = gs
    c.cache.put(c.cache.gameservers, KEY[1:], gs, False)
    c.reconcile(KEY)
    sync(kube, c)
    dep_key = ("Deployment", "games", "odin")
    kube.objects[dep_key]["status"] = {"replicas": 1, "readyReplicas": 0}
    c.cache.put(c.cache.children, dep_key, kube.objects[dep_key], False)
    lose_node_a(kube, c)
    c.reconcile(KEY)
    spec = kube.objects[dep_key]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "odin-data-r2"}} in spec["volumes"]
    assert ("delete", "Pod", "odin-abc", 0) in kube.calls


def test_a_recovery_claims_number_is_read_from_its_name_and_nothing_else():
    assert ln.claim_number("odin", "odin-data-r2") == 2
    assert ln.claim_number("odin", "odin-data-r17") == 17
    assert ln.claim_number("a.b", "a.b-data-r3") == 3
    assert ln.claim_number("a.b", "axb-data-r3") is None  # a dot is a dot, not any character
    for other in ("odin-data", "odin-data-r", "odin-data-rx", "odin-data-r2b", "thor-data-r2",
                  "aodin-data-r2", "odin-data-r\u00b2"):
        assert ln.claim_number("odin", other) is None, other
