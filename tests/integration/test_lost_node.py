"""A lost node (issue 26, item 3) on two real nodes: the server runs on node A with its world on
a volume bound to A and an off-site store; A loses its power; the server comes back on node B
with the newest snapshot's world, its status saying the play that was lost; A returns and
nothing flaps. (`tools/cluster up --real-nodes 2`; a power cut is RealNode.power_cut.)"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import Operator, fresh_namespace
from gs_helpers import (apply_as_user, backup, condition, events_for, gameserver, run_phase,
                        wait_event, wait_phase)
from kube_helpers import api_error, message, wait_for
from realnode_helpers import (GAME_FILE, OPERATOR_IMAGE, report, server_pod, service_address,
                              store_on_node,
                              tg_server, tree_digest, two_real_nodes_joined, udp, volume_dir)

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)

NODE_A, NODE_B = "real-node-1", "real-node-0"  # A loses its power; B (the first) lives on
ON_REAL_NODES = {"nodeSelector": {"testbed.peon.dev/node": "real"}}  # either; the volume decides


@pytest.fixture(scope="module")
def two_real_nodes(kubeconfig, kubectl, crds):
    """real-node-0 and real-node-1 with the operator's and the test game's images; the second
    goes again after this module when the module made it."""
    with two_real_nodes_joined(kubectl) as nodes:
        t0 = time.monotonic()
        images = subprocess.run([str(ROOT / "tools/images")], capture_output=True, text=True)
        assert images.returncode == 0, images.stderr[-3000:]
        print(f"images in {time.monotonic() - t0:.1f}s")
        kubectl("apply", "--server-side", "-f", str(GAME_FILE))
        yield nodes


@pytest.fixture(scope="module")
def store_s3(two_real_nodes, kube, tmp_path_factory):
    """The store on real-node-0's (node B's) InternalIP, which pods on both nodes reach, and which a power
    cut of node A leaves alone."""
    with store_on_node(kube, NODE_B, tmp_path_factory.mktemp("lost-s3")) as server:
        yield server


@pytest.fixture(scope="module")
def lost_operator(kubeconfig, two_real_nodes, tmp_path_factory):
    with Operator.running(kubeconfig, tmp_path_factory.mktemp("lost-operator") / "operator.log",
                          ["--job-image", OPERATOR_IMAGE, "--namespace", "l-*"]) as op:
        yield op


@pytest.fixture
def lns(kube):
    yield from fresh_namespace(kube, "l")


@pytest.fixture
def node_bound_storage(kube, kubectl, lns, tmp_path):
    """A StorageClass whose volumes are bound to one node each (as local-path's): a hostPath
    volume with node affinity on A now; `add(node)` makes one on another node. All go after."""
    suffix = uuid.uuid4().hex[:6]
    sc = f"peon-local-{suffix}"
    (tmp_path / "sc.json").write_text(json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": sc},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain"}))
    kubectl("create", "-f", str(tmp_path / "sc.json"))
    root = pathlib.Path(f"/tmp/peon-lost-node-{suffix}")
    made: list[str] = []

    def add(node: str) -> pathlib.Path:
        d = root / node
        d.mkdir(parents=True)
        name = f"{sc}-{node}"
        kube.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                     "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                              "storageClassName": sc, "persistentVolumeReclaimPolicy": "Retain",
                              "hostPath": {"path": str(d), "type": "Directory"},
                              "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                                  {"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": [node]}]}]}}}})
        made.append(name)
        return d
    add(NODE_A)
    yield sc, add
    # Its backups first, while the namespace can still run the Jobs that forget their
    # snapshots (a terminating namespace takes no new Job, and their finalizers would hold it).
    for b in kube.list("GameServerBackup", lns):
        kube.delete("GameServerBackup", lns, b["metadata"]["name"])
    for _ in range(120):
        if not kube.list("GameServerBackup", lns):
            break
        time.sleep(1)
    kube.delete("Namespace", None, lns)  # its claims first, then their volumes
    gone = False
    for _ in range(240):  # a server's pods and Jobs end first; the test's outcome is already in
        if kube.get("Namespace", None, lns) is None:
            gone = True
            break
        time.sleep(1)
    for name in made:  # held by pv-protection until their claims go with the namespace
        kube.delete("PersistentVolume", None, name)
    kubectl("delete", "storageclass", sc, "--wait=false", check=False)
    if gone:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nnamespace {lns} still going after 240 s; {root} left for it")


def store_for(kube, ns, s3, password: str) -> dict:
    from seaweedfs import ACCESS_KEY, SECRET_KEY
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-keys", "namespace": ns},
                 "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                                "RESTIC_PASSWORD": password}})
    return {"s3": {"endpoint": s3.endpoint, "bucket": "peon-backups"}, "secretRef": {"name": "store-keys"}}


@pytest.mark.parametrize("value,words", [
    ("5", "should match"), ("1d", "should match"), ("5 m", "should match"),
    ("0s", "at least 1s"), ("", "at least 1s"), ("0h0m", "at least 1s")])
def test_a_recover_after_that_is_no_duration_is_refused_at_admission(kube, crds, namespace, value, words):
    e = api_error(lambda: kube.create(gameserver("adrift", namespace, storage={"recoverAfter": value})))
    assert e.status == 422 and "recoverAfter" in message(e) and words in message(e), message(e)
    for good in ("90s", "5m", "1h30m"):
        kube.create(gameserver(f"ok-{good}", namespace, storage={"recoverAfter": good}))


def ready(kube, node: str) -> bool:
    n = kube.get("Node", None, node)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])


def test_a_server_on_a_lost_node_comes_back_on_another_from_the_newest_snapshot_and_nothing_flaps(
        kube, kubectl, lns, two_real_nodes, store_s3, lost_operator, node_bound_storage):
    sc, add_volume = node_bound_storage
    _, node_a = two_real_nodes
    store = store_for(kube, lns, store_s3, "a long store password")
    apply_as_user(kube, tg_server("lost", lns, scheduling=ON_REAL_NODES, backup={"store": store},
                                  storage={"storageClassName": sc, "recoverAfter": "15s"}))
    wait_phase(kube, lns, "lost", "Running", timeout=240)
    assert server_pod(kube, lns, "lost")["spec"]["nodeName"] == NODE_A  # where its volume is
    ip, port = service_address(kube, lns, "lost")
    assert udp(ip, port, "JOIN alice hunter22") == "WELCOME alice"
    root = volume_dir(kube, lns, "lost-data")
    wait_for("alice's file", lambda: (root / "worlds" / "Dedicated" / "players" / "alice.json").exists(), 20)
    (root / "extra").mkdir()
    for i in range(3):
        (root / "extra" / f"blob{i}.bin").write_bytes(os.urandom(100_000 + i))
    world_id = report(kubectl, kube, lns, "lost")["world"]["id"]
    kube.create(backup("lost-b1", lns, "lost"))
    snapshot = run_phase(kube, "GameServerBackup", lns, "lost-b1", "Succeeded", timeout=240)["snapshot"]
    kept = {p: d for p, d in tree_digest(root).items()
            if p.startswith(("extra/", "worlds/Dedicated/players/"))}
    assert len(kept) == 4
    wait_for("the loss window in status", lambda: (kube.status_of("GameServer", lns, "lost").get(
        "backup") or {}).get("lastOffsite") == "lost-b1", 60)
    # Play after the last snapshot: it is lost with the node.
    (root / "extra" / "after-the-snapshot.bin").write_bytes(b"lost with node A")
    add_volume(NODE_B)  # where a world can go when A is lost

    t0 = time.monotonic()
    node_a.power_cut()
    try:
        wait_for(f"{NODE_A} NotReady", lambda: not ready(kube, NODE_A), 150, interval=1)
        t_not_ready = time.monotonic() - t0
        # Lost for less than recoverAfter, it waits and says so.
        def lost_and_waiting():
            c = condition(kube.get("GameServer", lns, "lost"), "NodeLost")
            return c if (c.get("status"), c.get("reason")) == ("True", "NodeNotReady") else f"{c}"
        waiting = wait_for("NodeLost True NodeNotReady", lost_and_waiting, 60, interval=0.5)
        assert waiting.get("reason") == "NodeNotReady", waiting
        assert NODE_A in waiting["message"] and "recoverAfter (15s)" in waiting["message"]

        def moved():
            gs = kube.get("GameServer", lns, "lost")
            st = gs.get("status") or {}
            if (st.get("recovery") or {}).get("claim") == "lost-data-r2" and st.get("phase") == "Running":
                return gs
            return f"phase {st.get('phase')}, recovery {st.get('recovery')}"
        gs = wait_for("the server running on a new claim", moved, 300, interval=1)
        t_moved = time.monotonic() - t0
        pod = server_pod(kube, lns, "lost")
        assert pod["spec"]["nodeName"] == NODE_B
        # The newest snapshot's world, bit-exact; the play after it is not there.
        new_root = volume_dir(kube, lns, "lost-data-r2")
        assert new_root != root and new_root.name == NODE_B
        assert {p: d for p, d in tree_digest(new_root).items() if p in kept} == kept
        assert not (new_root / "extra" / "after-the-snapshot.bin").exists()
        rep = report(kubectl, kube, lns, "lost")
        assert rep["world"]["id"] == world_id and not rep["world"]["created_now"]
        # Status and Events say the window: which snapshot, how old at the loss, what was left.
        rec = gs["status"]["recovery"]
        assert rec["fromClaim"] == "lost-data" and rec["lostNode"] == NODE_A
        assert rec["snapshot"] == "lost-b1" and rec["snapshotTime"] and rec["lostSince"]
        assert "taken " in rec["message"] and f"before node {NODE_A} was lost" in rec["message"]
        assert rec["leftBehind"] == [{"claim": "lost-data", "node": NODE_A, "since": rec["lostSince"],
                                      "replacedBy": "lost-data-r2"}]
        assert gs["status"]["seed"]["snapshot"] == snapshot
        wait_event(kube, lns, "lost", "RebuiltFromStore")
        wait_event(kube, lns, "lost", "ClaimLeftBehind")
        reasons = {e["reason"]: e for e in events_for(kube, lns, "lost")}
        assert "RebuiltFromStore" in reasons and "ClaimLeftBehind" in reasons
        assert reasons["RebuiltFromStore"]["type"] == "Warning"
        assert "of play before the loss" in reasons["RebuiltFromStore"]["message"]
        assert "Seeded" in reasons and snapshot[:8] in reasons["Seeded"]["message"]
        old = kube.get("PersistentVolumeClaim", lns, "lost-data")
        assert old["metadata"]["labels"]["peon.dev/left-behind"] == "true"
        assert json.loads(old["metadata"]["annotations"]["peon.dev/left-behind"])["node"] == NODE_A
    finally:
        if node_a.cut():
            t_on = node_a.power_on(lambda *a, **kw: kubectl(*a, **kw).stdout)
    wait_for(f"{NODE_A} Ready again", lambda: ready(kube, NODE_A), 120, interval=1)

    # Node A is back: nothing fights. The server stays on B and its new claim; the old claim
    # stays, bound to A's volume, unused and reported; the GameServer and its claims rest.
    time.sleep(5)
    before = {k: kube.get(*k)["metadata"]["resourceVersion"] for k in (
        ("GameServer", lns, "lost"), ("Deployment", lns, "lost"),
        ("PersistentVolumeClaim", lns, "lost-data"), ("PersistentVolumeClaim", lns, "lost-data-r2"))}
    pod_before = server_pod(kube, lns, "lost")["metadata"]["name"]
    time.sleep(25)
    after = {k: kube.get(*k)["metadata"]["resourceVersion"] for k in before}
    assert after == before
    pod = server_pod(kube, lns, "lost")
    assert (pod["metadata"]["name"], pod["spec"]["nodeName"]) == (pod_before, NODE_B)
    gs = kube.get("GameServer", lns, "lost")
    assert gs["status"]["phase"] == "Running" and gs["status"]["recovery"]["claim"] == "lost-data-r2"
    assert gs["status"]["recovery"]["leftBehind"][0]["claim"] == "lost-data"
    assert condition(gs, "NodeLost")["status"] == "False"
    assert (root / "extra" / "after-the-snapshot.bin").read_bytes() == b"lost with node A"  # kept
    assert not [p for p in kube.list("Pod", lns, "peon.dev/gameserver=lost")
                if p["spec"].get("nodeName") == NODE_A and "job-name" not in p["metadata"].get("labels", {})]
    print(f"\nNotReady {t_not_ready:.1f}s after the cut; running on {NODE_B} {t_moved:.1f}s after "
          f"the cut; power on {t_on:.1f}s")
