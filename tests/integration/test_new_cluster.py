"""A new cluster brings the worlds back from the store (issue 26, How we check, first item): a
server with a store is backed up; everything of its cluster that a world could come back from
goes; the same manifests are applied; the world comes back bit-exact, by the seed, and
separately through a backup listed back from the store and a restore. On the bed's real node: a
real game process (tests/realnode/testgame) writes the world, and bytes are compared by hash
against the snapshot as restic itself restores it on this machine.

THIS IS THE FALLBACK, not the literal check. The literal one (a bed A with its own etcd, API
server and real node, brought down with `tools/cluster down`, then a bed B the same) cannot run
beside the suite's bed as the bed is today: tools/testbed/realnode.py allows one bed's real nodes
per machine (RealNode.up refuses while /run/peon-testbed/owner names another running bed, and
RealNode.down and machine_down leave another bed's nodes alone), because what they share is
machine-wide: the bridge peonbr0 and its pod range 10.89.0.0/16, /run/peon-testbed and
/var/lib/peon-testbed, one kube-proxy for the machine (a second one would rewrite the first's
KUBE-* iptables chains), and the Service range 10.96.0.0/16 every bed allocates from. A bed
without a real node runs no container (kwok only marks pods Succeeded), so a listing, a seed or
a restore would not really run on it. Making room for guest real nodes of a second bed (an index
of the shared bridge, no kube-proxy of their own, their own cgroup root and folders) is a change
to realnode.py and tools/cluster larger than this check's time allowed.

So on the one bed, the old "cluster" goes as a dead cluster goes: its operator is stopped first
(no clean-up of its runs: no forget, no final backup), then the namespace is deleted with its
GameServers, backups, Secret, claims and volumes (finalizers cleared by hand, as nothing of a
dead cluster would run them) and the Game's catalogue entry; the test checks the volumes and
their bytes on the machine are gone and the snapshots are still in the store. Then a new operator
process, which remembers nothing, and the very same manifest files (the namespace, the Game, the
store's Secret, the GameServers) applied again: the new claims are bound to new volumes.

The repository of a server is <bucket>/<namespace>/<server>, so the new "cluster" uses the same
namespace name, as a new cluster given the same Git repository would.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
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
from kube_helpers import wait_for
from realnode_helpers import (GAME, GAME_FILE, OPERATOR_IMAGE, ON_REAL_NODE, report, server_pod,
                              service_address, udp, volume_dir)

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, build  # noqa: E402

pytestmark = pytest.mark.timeout(900)

PASSWORD = "the new cluster's store password"
BUCKET = "peon-backups"
SEEDED, TOME = "seeded", "tome"  # one comes back by its seed, one by a listed-back restore
WORLD = "worlds/Dedicated/"


# --- the bed: its real node, a store on the node's bridge, restic on this machine ----------------

@pytest.fixture(scope="module")
def nc_real_node(real_node, crds):
    """conftest's real-node-0 (the operator's and the test game's images imported), on the bed
    only: the old cluster's volumes are checked on this machine's disk."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("the store runs on this machine's side of the bed's bridge, and the old "
                    "cluster's volumes are checked on this machine's disk: the bed's own only")
    return real_node


@pytest.fixture(scope="module")
def nc_s3(nc_real_node, kube, tmp_path_factory):
    """SeaweedFS on the real node's InternalIP (the bed's bridge gateway, an address of this
    machine): the off-site store, which outlives the cluster."""
    node = kube.get("Node", None, nc_real_node)
    ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    weed = build("seaweedfs")
    assert weed, "SeaweedFS could not be built (tools/testbed/build-gotool seaweedfs)"
    server = SeaweedFS(weed, tmp_path_factory.mktemp("nc-s3"), ip=ip)
    yield server
    server.stop()


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


def fingerprint(root: pathlib.Path) -> dict[str, tuple]:
    """Every entry under root: its content's SHA-256 (a file), its link target or "dir", its
    mode and owner. lost+found and Peon's own .peon- leftovers are not the world."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".peon-")
                       and not (d == "lost+found" and pathlib.Path(dirpath) == root)]
        for name in dirnames + filenames:
            if name.startswith(".peon-"):
                continue
            p = pathlib.Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                what = "->" + os.readlink(p)
            elif p.is_file():
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = "dir"
            out[rel] = (what, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


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


# --- the old cluster, backed up and gone; the new one given the same manifests --------------------

@pytest.fixture(scope="module")
def new_cluster(kubeconfig, kube, kubectl, nc_real_node, nc_s3, restic, tmp_path_factory):
    ns = f"nc-{uuid.uuid4().hex[:8]}"
    game = f"{GAME}-{ns}"
    tmp = tmp_path_factory.mktemp("new-cluster")
    v1 = manifests(tmp / "git-v1", ns, game, nc_s3.endpoint, seed=False)
    v2 = manifests(tmp / "git", ns, game, nc_s3.endpoint, seed=True)
    facts: dict = {"ns": ns, "game": game, "t": {}}
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

        # The old cluster goes: its operator first (nothing of it runs again), then every
        # object a world could come back from, and the volumes' bytes on the machine.
        t2 = time.monotonic()
        stop_operator(old_op)
        old_op = None
        gone(kube, kubectl, ns)
        kube.delete("Game", None, game)
        for name in (SEEDED, TOME):
            pv, root = old[name]["pv"], old[name]["root"]
            wait_for(f"volume {pv} gone", lambda: kube.get("PersistentVolume", None, pv) is None, 120)
            wait_for(f"{root} gone from the machine", lambda: not root.exists(), 120)
        assert kube.get("Game", None, game) is None
        facts["t"]["old cluster gone"] = time.monotonic() - t2
        # The store outlives it: both snapshots are still there.
        for name in (SEEDED, TOME):
            got = restic_run(restic, old[name]["repo"], "snapshots", "--json")
            assert got.returncode == 0, got.stderr[-2000:]
            assert [s["id"] for s in json.loads(got.stdout)] == [old[name]["snapshot"]]

        # The new cluster: an operator that remembers nothing, the same manifest files.
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
            gone(kube, kubectl, ns)
        finally:
            kube.delete("Game", None, game)
            if new_op:
                stop_operator(new_op)


def test_a_new_cluster_given_the_same_manifests_seeds_the_world_from_the_store_bit_exact(
        kube, kubectl, new_cluster):
    ns, old = new_cluster["ns"], new_cluster["old"][SEEDED]
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
        kube, kubectl, kubeconfig, new_cluster):
    ns, old = new_cluster["ns"], new_cluster["old"][TOME]
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
