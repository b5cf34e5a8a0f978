"""A new cluster brings the worlds back from the store (issue 26, How we check, first item): a
server with a store is backed up; everything of its cluster that a world could come back from
goes; the same manifests are applied; the world comes back bit-exact, by the seed, and
separately through a backup listed back from the store and a restore. On the bed's real node: a
real game process (tests/realnode/testgame) writes the world, and bytes are compared by hash
against the snapshot as restic itself restores it on this machine.

The literal check: the old cluster is the bed with its real node; `tools/cluster down` takes
all of it (etcd and its data, the API server, the controllers, the real node's kubelet and
containerd, every object), and the old volumes' folders go too, as the disk of a dead machine
does. `tools/cluster up --real-node` then makes a new bed (new certificates, a new etcd: the test
checks that the `default` namespace's uid is not the old one), Peon's CRDs are installed, a new
operator starts, and the very same manifest files (the namespace, the Game, the store's Secret,
the GameServers) are applied. The store is SeaweedFS on this machine, outside the bed: it outlives
the cluster, and it is stopped while the bed is rebuilt and started again on its own data (the
bed's bridge, its address, goes with the old bed).

Because it takes the bed down, this module runs in a pytest session of its own: in a session
with other tests its items are skipped with that reason (conftest.py), and `make test` runs it
after the suite. On a cluster of the user's (KUBECONFIG) it is skipped: it would bring that
cluster down.

The repository of a server is <bucket>/<namespace>/<server>, so the new cluster uses the same
namespace name, as a new cluster given the same Git repository would.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from kubernetes.client.rest import ApiException

from peon.shared.kube import path

from conftest import Operator
from gs_helpers import backup, events_for, restore, run_phase, wait_phase
from kube_helpers import K, client_for, wait_for
from realnode_helpers import (GAME, GAME_FILE, OPERATOR_IMAGE, ON_REAL_NODE, fingerprint, report,
                              server_pod, service_address, store_on_node, udp, volume_dir)

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from seaweedfs import ACCESS_KEY, SECRET_KEY, build  # noqa: E402

pytestmark = [pytest.mark.timeout(1200), pytest.mark.rebuilds_bed]

PASSWORD = "the new cluster's store password"
BUCKET = "peon-backups"
SEEDED, TOME = "seeded", "tome"  # one comes back by its seed, one by a listed-back restore
WORLD = "worlds/Dedicated/"


# --- the bed: its real node, a store on the node's bridge, restic on this machine ----------------

@pytest.fixture(scope="module")
def nc_real_node(real_node, crds):
    """conftest's real-node-0 (the operator's and the test game's images imported), on the bed
    only: this test brings the cluster down and makes a new one."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("this test brings its cluster down and makes a new one: the bed's own only, "
                    "never a cluster KUBECONFIG names")
    return real_node


@pytest.fixture(scope="module")
def nc_s3(nc_real_node, kube, tmp_path_factory):
    """The off-site store, on the real node's InternalIP, which outlives the cluster."""
    with store_on_node(kube, nc_real_node, tmp_path_factory.mktemp("nc-s3")) as server:
        yield server


@pytest.fixture(scope="module")
def restic():
    exe = build("restic")
    assert exe, "restic could not be built (tools/testbed/build-gotool restic)"
    return exe


def restic_run(exe: str, repo: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RESTIC_REPOSITORY": repo, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "RESTIC_PASSWORD": PASSWORD}
    return subprocess.run([exe, "--no-cache", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def assert_world_is_the_snapshot(world: pathlib.Path, snap: pathlib.Path) -> None:
    """The world on the new cluster's volume is the snapshot, entry by entry: every file's bytes
    by hash, every mode and owner, nothing missing and nothing more. The running game rewrites
    two files as it starts and ticks: its meta.json (last start, the tick count; the world's id,
    name, creation and version must be the snapshot's) and world.db, which only grows (the
    snapshot's bytes must be its start)."""
    got, want = fingerprint(world), fingerprint(snap)
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    moving = {WORLD + "meta.json", WORLD + "world.db"}
    for rel, (what, *owner) in want.items():
        assert got[rel][1:] == tuple(owner), (rel, got[rel], want[rel])
        if rel not in moving:
            assert got[rel][0] == what, rel
    old, new = (json.loads((r / WORLD / "meta.json").read_text()) for r in (snap, world))
    for key in ("world_id", "name", "created", "version"):
        assert new[key] == old[key], key
    assert new["ticks"] >= old["ticks"]
    db = (snap / WORLD / "world.db").read_bytes()
    assert len(db) > 0 and (world / WORLD / "world.db").read_bytes().startswith(db)


# --- the manifests: what a user keeps in Git ------------------------------------------------------

def manifests(folder: pathlib.Path, ns: str, game: str, endpoint: str, seed: bool) -> pathlib.Path:
    """The namespace, the Game, the store's Secret and the two GameServers as files; with `seed`
    the seeded server asks for the store's newest snapshot (a user adds it to Git once the
    server has a backup: before, there is no snapshot to seed from)."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = yaml.safe_load(GAME_FILE.read_text())
    entry["metadata"] = {"name": game}
    store = {"s3": {"endpoint": endpoint, "bucket": BUCKET}, "secretRef": {"name": "store-keys"}}

    def server(name: str, seeded: bool) -> dict:
        return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"gameUid": game, "serverName": name, "scheduling": ON_REAL_NODE,
                         "settings": [{"type": "env", "name": "env",
                                       "content": {"SERVER_PASS": "hunter22"}}],
                         "backup": {"store": {**store, "seed": "latest"} if seeded else store}}}
    files = {
        "00-namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}],
        "01-game.yaml": [entry],
        "02-store-secret.yaml": [{
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-keys", "namespace": ns},
            "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                           "RESTIC_PASSWORD": PASSWORD}}],
        "03-servers.yaml": [server(SEEDED, seed), server(TOME, False)],
    }
    for name, docs in files.items():
        (folder / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return folder


def apply(kubectl, folder: pathlib.Path) -> None:
    kubectl("apply", "--server-side", "-f", str(folder))


def start_operator(kubeconfig: str, log: pathlib.Path) -> Operator:
    op = Operator(kubeconfig, log, ["--job-image", OPERATOR_IMAGE, "--namespace", "nc-*"])
    time.sleep(0.5)
    assert op.proc.poll() is None, op.log()
    return op


def stop_operator(op: Operator) -> None:
    op.stop()
    text = op.log()
    assert "Traceback" not in text, text[-3000:]
    assert "hunter22" not in text and PASSWORD not in text


def gone(kube, kubectl, ns: str, timeout: float = 240) -> None:
    """The namespace deleted and waited for; finalizers cleared as they show (nothing of a
    dead cluster would run them)."""
    kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)

    def cleared():
        if kube.get("Namespace", None, ns) is None:
            return True
        for kind in ("GameServerBackup", "GameServerRestore", "GameServer"):
            for obj in kube.list(kind, ns):
                if obj["metadata"].get("finalizers"):
                    try:
                        kube.raw("PATCH", path(kind, ns, obj["metadata"]["name"]),
                                 {"metadata": {"finalizers": None}},
                                 content_type="application/merge-patch+json")
                    except ApiException as e:
                        if e.status != 404:
                            raise
        return False
    wait_for(f"namespace {ns} gone", cleared, timeout, interval=1)


def tool(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([str(ROOT / "tools" / args[0]), *args[1:]], capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, f"tools/{' '.join(args)}: {res.stderr[-3000:]}"
    return res


def new_bed(kubeconfig: str, kubectl) -> K:
    """A new bed where the old one was, as on a new machine: its control plane, its real node
    joined, the images imported; Peon's CRDs installed. A client for it (the session's is the
    old cluster's: its certificates and API server are gone)."""
    tool("cluster", "up", "--real-node")
    tool("images")
    kube = K(client_for(kubeconfig))
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        # Just created, a CRD may have no status yet, and kubectl wait then fails at once.
        wait_for(f"crd/{name} established", lambda: kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}",
            check=False).returncode == 0, 90, interval=1)
    return kube


# --- the old cluster, backed up and gone; the new one given the same manifests --------------------

@pytest.fixture(scope="module")
def new_cluster(kubeconfig, kube, kubectl, nc_real_node, nc_s3, restic, tmp_path_factory):
    ns = f"nc-{uuid.uuid4().hex[:8]}"
    game = f"{GAME}-{ns}"
    tmp = tmp_path_factory.mktemp("new-cluster")
    v1 = manifests(tmp / "git-v1", ns, game, nc_s3.endpoint, seed=False)
    v2 = manifests(tmp / "git", ns, game, nc_s3.endpoint, seed=True)
    facts: dict = {"ns": ns, "game": game, "t": {}, "kube": kube}
    old_op = start_operator(kubeconfig, tmp / "operator-old.log")
    new_op = None
    try:
        t0 = time.monotonic()
        apply(kubectl, v1)
        for name in (SEEDED, TOME):
            wait_phase(kube, ns, name, "Running", timeout=240)
        facts["t"]["old cluster: both Running"] = time.monotonic() - t0
        old = {}
        for name in (SEEDED, TOME):
            ip, port = service_address(kube, ns, name)
            assert udp(ip, port, "JOIN alice hunter22") == "WELCOME alice"
            root = volume_dir(kube, ns, f"{name}-data")
            wait_for("alice's file", lambda: (root / WORLD / "players" / "alice.json").exists(), 20)
            # She leaves: the seed's addition below is a change that waits for players to go.
            assert udp(ip, port, "LEAVE alice") == "BYE alice"
            # Known bytes the game never rewrites, with owners and modes of their own.
            (root / "extra").mkdir()
            for i in range(3):
                (root / "extra" / f"blob{i}.bin").write_bytes(os.urandom(300_000 + i))
            os.chown(root / "extra" / "blob0.bin", 1234, 4321)
            os.chmod(root / "extra" / "blob1.bin", 0o600)
            pvc = kube.get("PersistentVolumeClaim", ns, f"{name}-data")
            old[name] = {"world_id": report(kubectl, kube, ns, name)["world"]["id"],
                         "pv": pvc["spec"]["volumeName"], "root": root,
                         "alice": (root / WORLD / "players" / "alice.json").read_bytes(),
                         "extra": fingerprint(root / "extra")}
        t1 = time.monotonic()
        for name in (SEEDED, TOME):
            kube.create(backup(f"{name}-b1", ns, name))
        for name in (SEEDED, TOME):
            done = run_phase(kube, "GameServerBackup", ns, f"{name}-b1", "Succeeded", timeout=240)
            old[name]["snapshot"] = done["snapshot"]
            old[name]["repo"] = done["store"]
            assert done["store"] == f"s3:{nc_s3.endpoint}/{BUCKET}/{ns}/{name}"
        facts["t"]["old cluster: two store backups"] = time.monotonic() - t1

        # The seed added to Git and applied: this world holds data, so it is kept, untouched.
        apply(kubectl, v2)

        def rolled():
            pod = server_pod(kube, ns, SEEDED)
            return pod if any(c["name"] == "seed" for c in pod["spec"].get("initContainers") or []) \
                else "the pod has no seed step yet"
        wait_for("the seeded server's pod with its seed step", rolled, 180, interval=1)
        rep = report(kubectl, kube, ns, SEEDED)
        assert rep["world"]["id"] == old[SEEDED]["world_id"] and not rep["world"]["created_now"]
        assert not [e for e in events_for(kube, ns, SEEDED) if e["reason"] == "Seeded"]

        # What the store holds, restored by restic itself on this machine: the reference.
        for name in (SEEDED, TOME):
            ref = tmp / f"snapshot-{name}"
            got = restic_run(restic, old[name]["repo"], "restore",
                             f"{old[name]['snapshot']}:/data", "--target", str(ref))
            assert got.returncode == 0, got.stderr[-2000:]
            assert (ref / WORLD / "players" / "alice.json").read_bytes() == old[name]["alice"]
            assert fingerprint(ref / "extra") == old[name]["extra"]
            meta = json.loads((ref / WORLD / "meta.json").read_text())
            assert meta["world_id"] == old[name]["world_id"]
            old[name]["ref"], old[name]["ticks"] = ref, meta["ticks"]

        # The old cluster goes, all of it: its operator first (nothing of it runs again), then
        # `tools/cluster down` (etcd and its data, the API server, the real node), and the old
        # volumes' folders, as a dead machine's disk goes. The store is stopped meanwhile: the
        # bridge its address is on goes with the bed.
        t2 = time.monotonic()
        stop_operator(old_op)
        old_op = None
        old_uid = kube.get("Namespace", None, "default")["metadata"]["uid"]
        nc_s3.stop()
        tool("cluster", "down")
        assert subprocess.run([str(ROOT / "tools/cluster"), "status"],
                              capture_output=True).returncode != 0
        for name in (SEEDED, TOME):
            shutil.rmtree(old[name]["root"])
        facts["t"]["old cluster down"] = time.monotonic() - t2

        # The new cluster, on a new bed: nothing of the old one's objects.
        t3 = time.monotonic()
        kube = new_bed(kubeconfig, kubectl)
        facts["kube"] = kube
        assert kube.get("Namespace", None, "default")["metadata"]["uid"] != old_uid
        assert kube.get("Namespace", None, ns) is None and kube.get("Game", None, game) is None
        assert kube.list("PersistentVolume", None) == []
        facts["t"]["new bed up"] = time.monotonic() - t3
        nc_s3.start()
        # The store outlived the cluster: both snapshots are still there.
        for name in (SEEDED, TOME):
            got = restic_run(restic, old[name]["repo"], "snapshots", "--json")
            assert got.returncode == 0, got.stderr[-2000:]
            assert [s["id"] for s in json.loads(got.stdout)] == [old[name]["snapshot"]]

        # An operator that remembers nothing, and the same manifest files.
        t3 = time.monotonic()
        new_op = start_operator(kubeconfig, tmp / "operator-new.log")
        apply(kubectl, v2)
        facts.update(old=old, t3=t3, op=new_op)
        yield facts
    finally:
        print("\nnew cluster: " + ", ".join(f"{k} {v:.1f} s" for k, v in facts["t"].items()))
        try:
            if old_op:
                old_op.stop()
            # Deleted while the new operator runs: it releases its backups' finalizers (the
            # namespace takes no Job), so nothing is left Terminating; the store is this module's.
            gone(facts["kube"], kubectl, ns)
        finally:
            facts["kube"].delete("Game", None, game)
            if new_op:
                stop_operator(new_op)


def test_a_new_cluster_given_the_same_manifests_seeds_the_world_from_the_store_bit_exact(
        kubectl, new_cluster):
    kube, ns, old = new_cluster["kube"], new_cluster["ns"], new_cluster["old"][SEEDED]
    gs = wait_phase(kube, ns, SEEDED, "Running", timeout=300)
    new_cluster["t"]["new cluster: seeded server Running"] = time.monotonic() - new_cluster["t3"]
    # A new claim on a new volume, not the old one's bytes.
    pvc = kube.get("PersistentVolumeClaim", ns, f"{SEEDED}-data")
    assert pvc["spec"]["volumeName"] != old["pv"] and not old["root"].exists()
    root = volume_dir(kube, ns, f"{SEEDED}-data")
    assert root != old["root"]
    # The game loaded the world as it was backed up, not a new one.
    rep = report(kubectl, kube, ns, SEEDED)
    assert rep["world"]["id"] == old["world_id"] and not rep["world"]["created_now"]
    assert rep["world"]["loaded_ticks"] == old["ticks"]
    assert_world_is_the_snapshot(root, old["ref"])
    # Status and an Event say which snapshot.
    seed = gs["status"]["seed"]
    assert seed["snapshot"] == old["snapshot"] and seed["snapshotTime"] and seed["seededAt"]
    seeded = wait_for("the Seeded event", lambda: [e for e in events_for(kube, ns, SEEDED)
                                                    if e["reason"] == "Seeded"], 30)
    assert len(seeded) == 1 and old["snapshot"][:8] in seeded[0]["message"]
    # Players come back to it through its Service.
    ip, port = service_address(kube, ns, SEEDED)
    assert udp(ip, port, "JOIN alice hunter22") == "WELCOME alice"


def test_a_new_cluster_lists_the_backup_back_from_the_store_and_restores_it_bit_exact(
        kubectl, kubeconfig, new_cluster):
    kube, ns, old = new_cluster["kube"], new_cluster["ns"], new_cluster["old"][TOME]
    # Without a seed the server starts on a new, empty world on a new volume.
    wait_phase(kube, ns, TOME, "Running", timeout=300)
    pvc = kube.get("PersistentVolumeClaim", ns, f"{TOME}-data")
    assert pvc["spec"]["volumeName"] != old["pv"] and not old["root"].exists()
    rep = report(kubectl, kube, ns, TOME)
    assert rep["world"]["created_now"] and rep["world"]["id"] != old["world_id"]

    # The operator lists the store back: a backup object for each snapshot, as the old one
    # named it, for both servers.
    t0 = time.monotonic()

    def listed(name):
        def found():
            b = kube.get("GameServerBackup", ns, f"{name}-b1")
            st = (b or {}).get("status") or {}
            return b if st.get("phase") == "Succeeded" else f"{name}-b1: {st or b}"
        return wait_for(f"{name}-b1 listed back", found, 180, interval=1)
    found = listed(TOME)
    new_cluster["t"]["new cluster: backup listed back"] = time.monotonic() - t0
    st = found["status"]
    assert found["metadata"]["labels"]["peon.dev/found-in-store"] == "true"
    assert found["spec"]["gameServer"] == TOME
    assert st["snapshot"] == old["snapshot"] and st["store"] == old["repo"]
    assert st["storeSecret"] == "store-keys" and st["foundInStore"]
    assert st["size"] > 0 and st["files"] >= 5 and st["game"] == new_cluster["game"]
    other = listed(SEEDED)
    assert other["status"]["snapshot"] == new_cluster["old"][SEEDED]["snapshot"]
    assert sorted(b["metadata"]["name"] for b in kube.list("GameServerBackup", ns)) == \
        [f"{SEEDED}-b1", f"{TOME}-b1"]  # one each, no duplicates
    shown = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubectl-peon"), "backups",
                            TOME, "-n", ns], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "KUBECONFIG": kubeconfig})
    assert shown.returncode == 0 and f"{TOME}-b1" in shown.stdout, shown.stderr

    # Restored from it: the world as the old cluster backed it up.
    t1 = time.monotonic()
    kube.create(restore(f"{TOME}-r1", ns, TOME, f"{TOME}-b1"))
    run_phase(kube, "GameServerRestore", ns, f"{TOME}-r1", "Succeeded", timeout=300)
    wait_phase(kube, ns, TOME, "Running", timeout=180)
    new_cluster["t"]["new cluster: restore to Running"] = time.monotonic() - t1
    rep = report(kubectl, kube, ns, TOME)
    assert rep["world"]["id"] == old["world_id"] and not rep["world"]["created_now"]
    assert rep["world"]["loaded_ticks"] == old["ticks"]
    assert_world_is_the_snapshot(volume_dir(kube, ns, f"{TOME}-data"), old["ref"])
