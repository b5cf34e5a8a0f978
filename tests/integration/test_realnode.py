"""Every promise on a real node with a real process: the bed's `real-node-0` (kubelet,
kube-proxy, containerd) runs the test game (tests/realnode/testgame) as users run game servers,
through the operator as users run it. Where the machine cannot run containers, these report
skipped with the reason (a skip is not a pass)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import stat
import subprocess
import time
import uuid

import a2s
import pytest
import yaml

from api_helpers import PeonApi
from conftest import Clock, Operator, fresh_namespace
from gs_helpers import (apply_as_user, backup, events_for, restore, run_phase, wait_event,
                        wait_phase)
from kube_helpers import wait_for
from realnode_helpers import (GAME, GAME_FILE, IMAGE, NODE, ON_REAL_NODE, OPERATOR_IMAGE, TAINT,
                              archive_digest, report, server_pod, service_address, store_on_node,
                              tg_server, tree_digest, udp, volume_dir)

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The first test pays for the node, debootstrap and three image builds and imports.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def rn_operator(kubeconfig, crds, real_node, tmp_path_factory, rn_clock):
    """The operator as users run it, with the image its Jobs and init steps really run; no
    probe-address override anywhere: it asks game servers through their Services."""
    with Operator.running(kubeconfig, tmp_path_factory.mktemp("rn-operator") / "operator.log",
                          ["--job-image", OPERATOR_IMAGE, "--namespace", "r-*"],
                          clock_file=rn_clock.path) as op:
        yield op


@pytest.fixture
def rns(kube):
    yield from fresh_namespace(kube, "r")


def peon(kubeconfig, *args) -> subprocess.CompletedProcess:
    """The `peon` command, as a user runs it against the cluster."""
    return subprocess.run([str(pathlib.Path(os.sys.executable).parent / "peon"), *args],
                          env={**os.environ, "KUBECONFIG": kubeconfig}, capture_output=True,
                          text=True, timeout=600)


def download_and_restore(kube, kubeconfig, ns, name, tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """`peon backup download`, then `peon archive restore` of the file, outside Kubernetes."""
    out, world = tmp_path / f"{name}.tar.gz", tmp_path / f"{name}-world"
    got = peon(kubeconfig, "backup", "download", name, "-n", ns, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert f"{out}: " in got.stdout and (tmp_path / f"{name}.tar.gz.sha256").exists()
    assert kube.list("Pod", ns, f"peon.dev/download={name}") == []  # its pod is gone
    restored = peon(kubeconfig, "archive", "restore", str(out), str(world))
    assert restored.returncode == 0, restored.stderr
    return out, world


def players_online(kube, ns, name):
    return ((kube.status_of("GameServer", ns, name).get("players")) or {}).get("online")


# --- settings -----------------------------------------------------------------------------------

def test_peon_payload_settings_reach_the_game_process_and_no_secret_leaks(
        kube, kubectl, rns, testgame, rn_operator):
    payload = json.loads((ROOT / "examples" / "peon-payload.json").read_text())
    payload["game_uid"] = GAME
    conv = subprocess.run([str(pathlib.Path(os.sys.executable).parent / "peon"), "convert",
                           "--secret-env", "-"], input=json.dumps(payload), capture_output=True,
                          text=True, check=True)
    docs = list(yaml.safe_load_all(conv.stdout))
    secret = next(d for d in docs if d["kind"] == "Secret")
    gs = next(d for d in docs if d["kind"] == "GameServer")
    gs["spec"]["scheduling"] = ON_REAL_NODE
    for d in (secret, gs):
        d["metadata"]["namespace"] = rns
        apply_as_user(kube, d)
    name = gs["metadata"]["name"]
    wait_phase(kube, rns, name, "Running", timeout=180)
    rep = report(kubectl, kube, rns, name)

    env = rep["env"]
    # PEON's names, mapped by the catalogue to the game's own variables; the password from a Secret.
    assert env["SERVER_PASS"] == "password123"
    assert env["SERVER_NAME"] == "My-Valhiem-Server" and env["WORLD_NAME"] == "awesomeworld"
    assert env["PEON_SERVER_NAME"] == payload["servername"]
    assert env["PEON_DESCRIPTION"] == payload["description"]
    assert rep["server"]["password_set"] and rep["world"]["path"].endswith("/worlds/awesomeworld")
    files = {f["path"]: f for f in rep["config"]["files"]}
    want_json = json.dumps({"somekey": "somevalue"}, indent=2, sort_keys=True) + "\n"
    assert files["/config/config.json"]["text"] == want_json
    assert files["/config/textfile.txt"]["text"] == payload["settings"][2]["content"]  # byte for byte
    assert files["/config/textfile.txt"]["sha256"] == hashlib.sha256(
        payload["settings"][2]["content"].encode()).hexdigest()

    # The password is nowhere a user (or a log collector) reads.
    blobs = [json.dumps(kube.list("ConfigMap", rns)), json.dumps(events_for(kube, rns, name)),
             json.dumps(kube.get("GameServer", rns, name)), rn_operator.log(),
             kubectl("-n", rns, "logs", server_pod(kube, rns, name)["metadata"]["name"]).stdout]
    for b in blobs:
        assert "password123" not in b


# --- the world on a volume the game does not own ------------------------------------------------

def test_the_game_as_uid_1000_writes_its_world_on_a_root_owned_volume(
        kube, kubectl, rns, testgame, rn_operator):
    apply_as_user(kube, tg_server("owner", rns))
    wait_phase(kube, rns, "owner", "Running", timeout=180)
    rep = report(kubectl, kube, rns, "owner")
    assert rep["uid"] == 1000 and rep["world"]["created_now"]
    root = volume_dir(kube, rns, "owner-data")
    # The provisioner made the folder as root; the init step gave it to the game's user.
    assert root.stat().st_uid == 1000
    world = root / "worlds" / "Dedicated"
    size = (world / "world.db").stat().st_size
    wait_for("the world to grow", lambda: (world / "world.db").stat().st_size > size, 30)
    assert {p.name for p in world.iterdir()} >= {"meta.json", "world.db", "players", "saves"}
    assert all(p.stat().st_uid == 1000 for p in world.rglob("*"))


# --- backups of live bytes, and restores ---------------------------------------------------------

def test_a_backup_of_the_live_world_restores_the_bytes_the_game_wrote(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, tmp_path):
    apply_as_user(kube, tg_server("keep", rns))
    wait_phase(kube, rns, "keep", "Running", timeout=180)
    game_ip, game_port = service_address(kube, rns, "keep")
    assert udp(game_ip, game_port, "JOIN alice hunter22") == "WELCOME alice"
    world = volume_dir(kube, rns, "keep-data") / "worlds" / "Dedicated"
    wait_for("alice's file", lambda: (world / "players" / "alice.json").exists(), 20)
    world_id = report(kubectl, kube, rns, "keep")["world"]["id"]
    # A set-group folder of the game's group (as an fsGroup makes them), which the restore,
    # running as root, can keep only with FSETID.
    players = world / "players"
    os.chmod(players, stat.S_IMODE(players.stat().st_mode) | stat.S_ISGID)
    assert players.stat().st_gid != 0

    kube.create(backup("keep-b1", rns, "keep"))
    done = run_phase(kube, "GameServerBackup", rns, "keep-b1", "Succeeded", timeout=180)
    assert done["node"] == NODE
    archive = volume_dir(kube, rns, "keep-backups") / "keep-b1.tar.gz"
    saved = archive_digest(archive)
    now = {k: (world.parent.parent / k).read_bytes() for k in saved}
    # Files the game no longer changes are the same bytes; the world database only grows, so
    # what the backup holds is what the game had written when it was read.
    prefix = "worlds/Dedicated/"
    for rel, data in saved.items():
        if rel in (prefix + "world.db",):
            assert now[rel].startswith(data) and len(data) > 0
        elif rel != prefix + "meta.json":
            assert now[rel] == data, rel
    saved_meta = json.loads(saved[prefix + "meta.json"])
    assert saved_meta["world_id"] == world_id and prefix + "players/alice.json" in saved
    # The Game's backupHooks ran in the game's container: saving off, the world written whole,
    # the archive, saving on. So the archive holds one consistent moment of the world.
    pod = server_pod(kube, rns, "keep")["metadata"]["name"]
    assert done["hooks"] == {"pod": pod, "after": "Done"}
    rep = report(kubectl, kube, rns, "keep")
    assert [c["command"] for c in rep["console"]] == ["save-off", "save-all", "save-on"]
    assert rep["world"]["saving"] is True
    saved_save = json.loads(saved[prefix + "saves/world.sav"])
    last_tick = int(saved[prefix + "world.db"].decode().splitlines()[-1].split()[1])
    assert saved_save["reason"] == "save-all"
    assert saved_save["ticks"] == saved_meta["ticks"] == last_tick

    # Downloaded out of the cluster: the archive's very bytes, which restore anywhere.
    out, copy = download_and_restore(kube, kubeconfig, rns, "keep-b1", tmp_path)
    assert out.read_bytes() == archive.read_bytes()
    assert tree_digest(copy) == {k: hashlib.sha256(v).hexdigest() for k, v in saved.items()}
    missing = peon(kubeconfig, "backup", "download", "nope", "-n", rns, "-o", str(tmp_path / "x"))
    assert missing.returncode == 1 and "there is no GameServerBackup 'nope'" in missing.stderr
    # PEON's Discord bot offers the same download: GET /api/v1/server/save/{uid}.
    api = PeonApi(kubeconfig, rns, None, tmp_path / "api.log")
    try:
        status, got = api.call("GET", f"/api/v1/server/save/{GAME}.keep")
    finally:
        api.stop()
    assert status == 200, got
    assert got == archive.read_bytes()

    # The world changes after the backup...
    assert udp(game_ip, game_port, "JOIN bob hunter22") == "WELCOME bob"
    wait_for("bob's file", lambda: (world / "players" / "bob.json").exists(), 20)
    # ...and the restore brings back the backed-up bytes, which the restarted game loads.
    kube.create(restore("keep-r1", rns, "keep", "keep-b1"))
    run_phase(kube, "GameServerRestore", rns, "keep-r1", "Succeeded", timeout=240)
    wait_phase(kube, rns, "keep", "Running", timeout=180)
    rep = report(kubectl, kube, rns, "keep")
    assert rep["world"]["id"] == world_id and not rep["world"]["created_now"]
    assert rep["world"]["loaded_ticks"] == saved_meta["ticks"]
    assert not (world / "players" / "bob.json").exists()
    assert (world / "players" / "alice.json").read_bytes() == saved[prefix + "players/alice.json"]
    assert (world / "world.db").read_bytes().startswith(saved[prefix + "world.db"])
    assert players.stat().st_mode & stat.S_ISGID and players.stat().st_uid == 1000

    # Deleting the backup deletes its archive, by a Job with no capabilities (root's file).
    kube.delete("GameServerBackup", rns, "keep-b1")
    wait_for("the backup gone", lambda: kube.get("GameServerBackup", rns, "keep-b1") is None, 180)
    assert not archive.exists() and not archive.with_name(archive.name + ".sha256").exists()


def test_a_failing_backup_hook_fails_the_backup_with_its_message_and_saving_resumes(
        kube, kubectl, rns, testgame, rn_operator):
    game = yaml.safe_load(GAME_FILE.read_text())
    game["metadata"] = {"name": f"{GAME}-{rns}"}
    game["spec"]["backupHooks"]["before"].append({"command": ["testgame", "console", "explode"]})
    kube.apply(game)
    try:
        apply_as_user(kube, tg_server("hooks", rns, gameUid=game["metadata"]["name"]))
        wait_phase(kube, rns, "hooks", "Running", timeout=180)
        kube.create(backup("hooks-b1", rns, "hooks"))
        failed = run_phase(kube, "GameServerBackup", rns, "hooks-b1", "Failed", timeout=120)
        assert ("backupHooks.before command 'testgame console explode' failed (exit code 1): "
                "ERR unknown command 'explode'") in failed["message"], failed["message"]
        assert failed["hooks"]["after"] == "Done" and not failed.get("archive")
        # save-on ran after the failure: the game writes its world again.
        rep = report(kubectl, kube, rns, "hooks")
        assert [c["command"] for c in rep["console"]] == ["save-off", "save-all", "save-on"]
        assert rep["world"]["saving"] is True
        wait_event(kube, rns, "hooks", "BackupFailed", "explode")
        assert kube.get("Job", rns, "hooks-b1-backup") is None  # nothing archived mid-write
    finally:
        kube.delete("GameServer", rns, "hooks")
        wait_for("the server to go", lambda: kube.get("GameServer", rns, "hooks") is None, 120)
        kube.delete("Game", None, game["metadata"]["name"])


# --- off-site backups: the store (SeaweedFS's S3 on the node's bridge) ---------------------------

@pytest.fixture(scope="module")
def node_s3(real_node, kube, tmp_path_factory):
    """The store on the real node's InternalIP, where the node's pods reach it."""
    with store_on_node(kube, real_node, tmp_path_factory.mktemp("node-s3")) as server:
        yield server


def store_for(kube, rns, node_s3, secret: str, password: str) -> dict:
    """A store Secret named `secret` (SeaweedFS's keys and `password`) and the spec.backup.store
    that names it."""
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from seaweedfs import ACCESS_KEY, SECRET_KEY
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": rns},
                 "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                                "RESTIC_PASSWORD": password}})
    return {"s3": {"endpoint": node_s3.endpoint, "bucket": "peon-backups"},
            "secretRef": {"name": secret}}


def test_an_off_site_backup_is_encrypted_in_the_store_and_restores_the_world(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, node_s3, tmp_path):
    password = "a long store password"
    store = store_for(kube, rns, node_s3, "store-keys", password)
    apply_as_user(kube, tg_server("offsite", rns, backup={"store": store}))
    wait_phase(kube, rns, "offsite", "Running", timeout=180)
    game_ip, game_port = service_address(kube, rns, "offsite")
    assert udp(game_ip, game_port, "JOIN alice hunter22") == "WELCOME alice"
    world = volume_dir(kube, rns, "offsite-data") / "worlds" / "Dedicated"
    wait_for("alice's file", lambda: (world / "players" / "alice.json").exists(), 20)
    world_id = report(kubectl, kube, rns, "offsite")["world"]["id"]
    alice = (world / "players" / "alice.json").read_bytes()
    # The server's first listing made its repository, ahead of its first backup.
    repository = f"s3:{node_s3.endpoint}/peon-backups/{rns}/offsite"
    wait_event(kube, rns, "offsite", "StoreRepositoryCreated", repository, timeout=120)
    wait_for("the repository's config in the bucket", lambda: any(
        o.endswith(f"/{rns}/offsite/config") for o in node_s3.objects("peon-backups", f"{rns}/offsite")), 30)

    kube.create(backup("offsite-b1", rns, "offsite"))
    done = run_phase(kube, "GameServerBackup", rns, "offsite-b1", "Succeeded", timeout=180)
    assert done["store"] == repository
    assert done["snapshot"] and done["size"] > 0 and done["files"] >= 3
    assert kube.get("PersistentVolumeClaim", rns, "offsite-backups") is None  # off-site only
    # At rest the store holds no byte of the world in the clear, nor the password.
    # (The filer's listing can trail a fresh upload by a moment.)
    objects = wait_for("the snapshot in the bucket", lambda: (lambda objs: objs if any(
        "/snapshots/" in o for o in objs) else None)(node_s3.objects("peon-backups", f"{rns}/offsite")), 30)
    contents = [node_s3.read(o) for o in objects]
    assert not any(alice in c or password.encode() in c for c in contents)
    # Downloaded from the store (exported by a short-lived pod) it restores outside Kubernetes:
    # the world as the backup took it, one consistent moment (the Game's hooks ran).
    _, copy = download_and_restore(kube, kubeconfig, rns, "offsite-b1", tmp_path)
    got = copy / "worlds" / "Dedicated"
    assert (got / "players" / "alice.json").read_bytes() == alice
    meta, save = (json.loads((got / p).read_text()) for p in ("meta.json", "saves/world.sav"))
    assert meta["world_id"] == world_id and save["ticks"] == meta["ticks"]

    # A wrong password fails the next backup with the reason, and nothing is lost.
    kube.raw("PATCH", f"/api/v1/namespaces/{rns}/secrets/store-keys",
             {"stringData": {"RESTIC_PASSWORD": "not the password"}},
             content_type="application/merge-patch+json")
    kube.create(backup("offsite-b2", rns, "offsite"))
    failed = run_phase(kube, "GameServerBackup", rns, "offsite-b2", "Failed", timeout=180)
    assert "encryption password" in failed["message"], failed["message"]
    assert "not the password" not in json.dumps(failed)
    kube.raw("PATCH", f"/api/v1/namespaces/{rns}/secrets/store-keys",
             {"stringData": {"RESTIC_PASSWORD": password}},
             content_type="application/merge-patch+json")

    # The world changes; the restore from the store brings back what was backed up.
    assert udp(game_ip, game_port, "JOIN bob hunter22") == "WELCOME bob"
    wait_for("bob's file", lambda: (world / "players" / "bob.json").exists(), 20)
    kube.create(restore("offsite-r1", rns, "offsite", "offsite-b1"))
    run_phase(kube, "GameServerRestore", rns, "offsite-r1", "Succeeded", timeout=240)
    wait_phase(kube, rns, "offsite", "Running", timeout=180)
    rep = report(kubectl, kube, rns, "offsite")
    assert rep["world"]["id"] == world_id and not rep["world"]["created_now"]
    assert not (world / "players" / "bob.json").exists()
    assert (world / "players" / "alice.json").read_bytes() == alice

    # Deleting the backup removes its snapshot from the store.
    kube.delete("GameServerBackup", rns, "offsite-b1")
    wait_for("the backup gone", lambda: kube.get("GameServerBackup", rns, "offsite-b1") is None, 180)
    assert not [o for o in node_s3.objects("peon-backups", f"{rns}/offsite") if "/snapshots/" in o]


# --- players over the real network, idle stop, wake-up -------------------------------------------

def test_players_seen_through_the_service_drive_an_idle_stop_and_a_wake_brings_the_world_back(
        kube, kubectl, rns, testgame, rn_operator, rn_clock):
    rn_clock.reset()
    apply_as_user(kube, tg_server("lobby", rns, uptime={"idle": {
        "after": "5m", "grace": "0m", "probeIntervalSeconds": 5}}))
    wait_phase(kube, rns, "lobby", "Running", timeout=180)
    world_id = report(kubectl, kube, rns, "lobby")["world"]["id"]
    ip, port = service_address(kube, rns, "lobby")
    assert udp(ip, port, "JOIN alice hunter22") == "WELCOME alice"
    wait_for("alice in status", lambda: players_online(kube, rns, "lobby") == 1, 60)
    out = kubectl("-n", rns, "get", "pgs", "lobby").stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    assert row[header.index("PLAYERS")] == "1"
    # With a player on, time passing stops nothing.
    rn_clock.advance(minutes=10)
    time.sleep(6)
    assert kube.status_of("GameServer", rns, "lobby")["phase"] == "Running"

    assert udp(ip, port, "LEAVE alice") == "BYE alice"
    wait_for("nobody on", lambda: players_online(kube, rns, "lobby") == 0, 60)
    rn_clock.advance(minutes=6)
    g = wait_phase(kube, rns, "lobby", "Stopped", timeout=120)
    assert g["status"]["uptime"]["reason"] == "Idle"
    wait_event(kube, rns, "lobby", "AutoStop")

    rn_clock.advance(minutes=1)  # friends come back later
    kubectl("-n", rns, "annotate", "pgs", "lobby", "--overwrite",
            f"peon.dev/wake={rn_clock.now().strftime('%Y-%m-%dT%H:%M:%SZ')}")
    wait_phase(kube, rns, "lobby", "Running", timeout=180)
    assert udp(ip, port, "PING").split()[2] == world_id  # the same world, over the same Service


# --- update ---------------------------------------------------------------------------------------

def test_an_image_update_backs_up_first_then_runs_the_new_version_on_the_same_world(
        kube, kubectl, rns, testgame, rn_operator, rn_clock):
    rn_clock.reset()  # the backup's times are the operator's; the pod's are the API server's
    apply_as_user(kube, tg_server("upd", rns, image=f"{IMAGE}:1.0"))
    wait_phase(kube, rns, "upd", "Running", timeout=180)
    before = report(kubectl, kube, rns, "upd")
    assert before["version"] == "1.0"

    apply_as_user(kube, tg_server("upd", rns, image=f"{IMAGE}:1.1"))
    bk = wait_for("the pre-update backup", lambda: next(
        (b for b in kube.list("GameServerBackup", rns)
         if b["spec"].get("reason") == "BeforeUpdate"
         and (b.get("status") or {}).get("phase") == "Succeeded"), None), 180)
    wait_phase(kube, rns, "upd", "Running", timeout=180)
    after = wait_for("version 1.1", lambda: (lambda r: r if r["version"] == "1.1" else None)(
        report(kubectl, kube, rns, "upd")), 120)
    assert after["world"]["id"] == before["world"]["id"] and not after["world"]["created_now"]
    # The backup finished before the new version's pod started.
    pod = server_pod(kube, rns, "upd")
    assert bk["status"]["completionTime"] <= pod["status"]["startTime"], (bk["status"], pod["status"])
    saved = archive_digest(volume_dir(kube, rns, "upd-backups")
                           / f"{bk['metadata']['name']}.tar.gz")
    assert json.loads(saved["worlds/Dedicated/meta.json"])["last_version"] == "1.0"


# --- destroy and eradicate ------------------------------------------------------------------------

def test_destroy_keeps_the_worlds_bytes_for_a_new_server_and_eradicate_removes_them(
        kube, kubectl, rns, testgame, rn_operator):
    apply_as_user(kube, tg_server("phoenix", rns))
    wait_phase(kube, rns, "phoenix", "Running", timeout=180)
    world_id = report(kubectl, kube, rns, "phoenix")["world"]["id"]
    root = volume_dir(kube, rns, "phoenix-data")

    kubectl("-n", rns, "delete", "pgs", "phoenix", "--wait=true", "--timeout=120s")
    wait_for("the pod gone", lambda: not kube.list("Pod", rns, "peon.dev/gameserver=phoenix"), 120)
    meta = json.loads((root / "worlds" / "Dedicated" / "meta.json").read_text())
    assert meta["world_id"] == world_id
    assert (root / "worlds" / "Dedicated" / "saves" / "world.sav").exists()  # saved on SIGTERM

    apply_as_user(kube, tg_server("phoenix", rns))
    wait_phase(kube, rns, "phoenix", "Running", timeout=180)
    rep = report(kubectl, kube, rns, "phoenix")
    assert rep["world"]["id"] == world_id and rep["world"]["loaded_save"]["world_id"] == world_id

    apply_as_user(kube, tg_server("phoenix", rns, storage={"retainOnDelete": False},
                                        backup={"beforeEradication": False}))
    wait_for("the claim owned by its server", lambda: (kube.get(
        "PersistentVolumeClaim", rns, "phoenix-data")["metadata"].get("ownerReferences")), 60)
    kubectl("-n", rns, "delete", "pgs", "phoenix", "--wait=true", "--timeout=120s")
    wait_for("the world's claim gone",
             lambda: kube.get("PersistentVolumeClaim", rns, "phoenix-data") is None, 120)
    wait_for("the world's bytes gone from the node", lambda: not root.exists(), 120)


# --- the address players use ----------------------------------------------------------------------

def test_status_endpoint_answers_a_datagram_from_the_host(kube, rns, testgame, rn_operator):
    apply_as_user(kube, tg_server("door", rns))
    g = wait_phase(kube, rns, "door", "Running", timeout=180)
    host, port = g["status"]["endpoint"].rsplit(":", 1)
    reply = udp(host, int(port), "PING")
    assert reply.startswith("PONG 1.0 ")
    query = next(e for e in g["status"]["endpoints"] if e["name"] == "query")
    info = a2s.info((query["address"], int(query["port"])), timeout=2)
    assert info.server_name == "door" and info.player_count == 0


# --- the operator's own image as a pod ------------------------------------------------------------

def test_the_operator_image_runs_as_a_pod_on_the_real_node_and_reconciles(
        kube, kubectl, kubeconfig, rns, testgame):
    """Host network: the bed's API server listens on loopback."""
    watched = f"op-{uuid.uuid4().hex[:8]}"  # not r-*: the session operator must not see it
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": watched}})
    try:
        kube.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "kubeconfig", "namespace": rns},
                     "data": {"config": base64.b64encode(pathlib.Path(kubeconfig).read_bytes()).decode()}})
        kube.create({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "peon-operator", "namespace": rns},
                     "spec": {"hostNetwork": True, "nodeSelector": ON_REAL_NODE["nodeSelector"],
                              "tolerations": [{"key": TAINT, "operator": "Exists"}],
                              "containers": [{
                                  "name": "operator", "image": OPERATOR_IMAGE,
                                  "args": ["--namespace", watched, "--job-image", OPERATOR_IMAGE],
                                  "env": [{"name": "KUBECONFIG", "value": "/kube/config"}],
                                  # As the chart runs it: a read-only root and a /tmp of its own.
                                  "volumeMounts": [{"name": "kc", "mountPath": "/kube"},
                                                   {"name": "tmp", "mountPath": "/tmp"}],
                                  "securityContext": {"readOnlyRootFilesystem": True}}],
                              "volumes": [{"name": "kc", "secret": {"secretName": "kubeconfig",
                                                                    "defaultMode": 0o444}},
                                          {"name": "tmp", "emptyDir": {}}]}})
        wait_for("the operator pod running", lambda: (kube.get("Pod", rns, "peon-operator")
                 .get("status", {}).get("phase") == "Running"), 120)
        apply_as_user(kube, tg_server("boxed", watched))
        wait_phase(kube, watched, "boxed", "Running", timeout=180)
        assert udp(*service_address(kube, watched, "boxed"), "PING").startswith("PONG")
        logs = kubectl("-n", rns, "logs", "peon-operator").stdout
        assert "Traceback" not in logs and "hunter22" not in logs
    finally:
        if not os.environ.get("PEON_DEBUG_KEEP"):
            kube.delete("Namespace", None, watched)


# --- a world seeded from the store: the same manifest on a new cluster brings the world back ------

def _gone_with_its_claim(kube, kubectl, rns, name):
    """What a new cluster has of the server: nothing (its world's volume is new and empty)."""
    kubectl("-n", rns, "delete", "pgs", name, "--wait=true", "--timeout=120s")
    wait_for("the pod gone", lambda: not kube.list("Pod", rns, f"peon.dev/gameserver={name}"), 120)
    kube.delete("PersistentVolumeClaim", rns, f"{name}-data")
    wait_for("the claim gone", lambda: kube.get("PersistentVolumeClaim", rns, f"{name}-data") is None, 120)


def test_a_server_applied_again_on_an_empty_volume_is_seeded_from_the_store_bit_exact(
        kube, kubectl, rns, testgame, rn_operator, node_s3):
    store = store_for(kube, rns, node_s3, "seed-keys", "a long store password")
    apply_as_user(kube, tg_server("reborn", rns, backup={"store": store}))
    wait_phase(kube, rns, "reborn", "Running", timeout=180)
    game_ip, game_port = service_address(kube, rns, "reborn")
    assert udp(game_ip, game_port, "JOIN alice hunter22") == "WELCOME alice"
    root = volume_dir(kube, rns, "reborn-data")
    wait_for("alice's file", lambda: (root / "worlds" / "Dedicated" / "players" / "alice.json").exists(), 20)
    # Known bytes the game never rewrites, with an owner and a mode of their own.
    (root / "extra").mkdir()
    for i in range(5):
        (root / "extra" / f"blob{i}.bin").write_bytes(os.urandom(200_000 + i))
    os.chown(root / "extra" / "blob0.bin", 1234, 4321)
    os.chmod(root / "extra" / "blob1.bin", 0o600)
    world_id = report(kubectl, kube, rns, "reborn")["world"]["id"]
    kube.create(backup("reborn-b1", rns, "reborn"))
    snapshot = run_phase(kube, "GameServerBackup", rns, "reborn-b1", "Succeeded", timeout=180)["snapshot"]
    kept = {p: d for p, d in tree_digest(root).items()
            if p.startswith(("extra/", "worlds/Dedicated/players/"))}
    owners = {p: (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode))
              for p in ("blob0.bin", "blob1.bin") for s in [os.lstat(root / "extra" / p)]}
    assert len(kept) == 6

    _gone_with_its_claim(kube, kubectl, rns, "reborn")
    apply_as_user(kube, tg_server("reborn", rns, backup={"store": {**store, "seed": "latest"}}))
    gs = wait_phase(kube, rns, "reborn", "Running", timeout=240)
    root = volume_dir(kube, rns, "reborn-data")
    assert {p: d for p, d in tree_digest(root).items() if p in kept} == kept
    assert {p: (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode))
            for p in owners for s in [os.lstat(root / "extra" / p)]} == owners
    rep = report(kubectl, kube, rns, "reborn")
    assert rep["world"]["id"] == world_id and not rep["world"]["created_now"]
    seed = gs["status"]["seed"]
    assert seed["snapshot"] == snapshot and seed["snapshotTime"] and seed["seededAt"]
    seeded = wait_for("the Seeded event", lambda: [e for e in events_for(kube, rns, "reborn")
                                                    if e["reason"] == "Seeded"], 30)
    assert len(seeded) == 1 and snapshot[:8] in seeded[0]["message"] and "taken" in seeded[0]["message"]

    # A restart of the server finds data in the world: it is kept, and nothing more is said.
    kubectl("-n", rns, "delete", "pod", "-l", "peon.dev/gameserver=reborn", "--wait=true")
    wait_phase(kube, rns, "reborn", "Running", timeout=180)
    assert report(kubectl, kube, rns, "reborn")["world"]["id"] == world_id
    assert len([e for e in events_for(kube, rns, "reborn") if e["reason"] == "Seeded"]) == 1

    # A wrong password: the game never starts on an empty world, and the status and a Warning say why.
    _gone_with_its_claim(kube, kubectl, rns, "reborn")
    kube.raw("PATCH", f"/api/v1/namespaces/{rns}/secrets/seed-keys",
             {"stringData": {"RESTIC_PASSWORD": "not the password"}},
             content_type="application/merge-patch+json")
    apply_as_user(kube, tg_server("reborn", rns, backup={"store": {**store, "seed": "latest"}}))

    def said():
        gs = kube.get("GameServer", rns, "reborn")
        ready = next((c for c in (gs.get("status") or {}).get("conditions") or ()
                      if c["type"] == "Ready"), {})
        return ready if ready.get("reason") == "SeedFailed" else None
    ready = wait_for("Ready: SeedFailed", said, 180)
    assert "encryption password" in ready["message"] and ready["status"] == "False"
    warned = wait_for("the SeedFailed event", lambda: [e for e in events_for(kube, rns, "reborn")
                                                        if e["reason"] == "SeedFailed"], 30)
    assert "encryption password" in warned[0]["message"]
    gs = kube.get("GameServer", rns, "reborn")
    assert gs["status"]["phase"] != "Running"
    assert "not the password" not in json.dumps(gs["status"]) + json.dumps(warned)
    [pod] = kube.list("Pod", rns, "peon.dev/gameserver=reborn")
    game = [c for c in pod["status"].get("containerStatuses") or () if c["name"] == "server"]
    assert not game or not (game[0].get("state") or {}).get("running")
    assert not game or not game[0].get("lastState", {}).get("terminated")
    assert not (volume_dir(kube, rns, "reborn-data") / "worlds").exists()  # no empty world made

    # The password put right: the step's next try (the kubelet's back-off) seeds the world.
    kube.raw("PATCH", f"/api/v1/namespaces/{rns}/secrets/seed-keys",
             {"stringData": {"RESTIC_PASSWORD": "a long store password"}},
             content_type="application/merge-patch+json")
    gs = wait_phase(kube, rns, "reborn", "Running", timeout=400)
    assert gs["status"]["seed"]["snapshot"] == snapshot
    assert report(kubectl, kube, rns, "reborn")["world"]["id"] == world_id
    root = volume_dir(kube, rns, "reborn-data")
    assert {p: d for p, d in tree_digest(root).items() if p in kept} == kept


# --- never drop players (issue 28) ---------------------------------------------------------------

def said_in_game(kubectl, kube, ns, name) -> list[str]:
    """What the game's console was told to say (the test game's report keeps its commands)."""
    return [c["command"] for c in report(kubectl, kube, ns, name)["console"]
            if c["command"].startswith("say ")]


def maintenance_of(kube, ns, name) -> dict:
    return (kube.status_of("GameServer", ns, name) or {}).get("maintenance") or {}


def two_players_on(kube, ns, name) -> dict:
    """alice and bob join the test game at its Service's address; once status counts them
    both, the pod they play on."""
    ip, port = service_address(kube, ns, name)
    for who in ("alice", "bob"):
        assert udp(ip, port, f"JOIN {who} hunter22") == f"WELCOME {who}"
    wait_for("2 players in status", lambda: players_online(kube, ns, name) == 2, 60)
    return server_pod(kube, ns, name)


def held_change(kube, ns, name, timeout: float = 60) -> dict:
    """status.maintenance once a change is pending (held for the players)."""
    return wait_for("the change held", lambda: (lambda m: m if m.get("pending") else None)(
        maintenance_of(kube, ns, name)), timeout)


def test_a_settings_change_waits_for_the_players_and_they_are_warned_before_the_deadline(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, rn_clock):
    rn_clock.reset()
    env = {"SERVER_PASS": "hunter22", "RCON_PASSWORD": "rcon-pass-1", "MOTD": "one"}

    def spec(**more):
        return tg_server("keep", rns, maintenance={"maxDelay": "1h"}, settings=[
            {"type": "env", "name": "env", "content": {**env, **more}}])
    apply_as_user(kube, spec())
    wait_phase(kube, rns, "keep", "Running", timeout=180)
    ip, port = service_address(kube, rns, "keep")
    pod = two_players_on(kube, rns, "keep")

    # A settings change with 2 players on: held, no new pod, and status says so.
    apply_as_user(kube, spec(MOTD="two"))
    m = held_change(kube, rns, "keep")
    assert m["pending"] == "new settings" and m["reason"] == "PlayersOnline"
    assert "2 players on" in m["message"]
    cond = next(c for c in kube.status_of("GameServer", rns, "keep")["conditions"]
                if c["type"] == "ChangePending")
    assert cond["status"] == "True"
    wait_event(kube, rns, "keep", "ChangeHeld")
    time.sleep(8)
    pods = kube.list("Pod", rns, "peon.dev/gameserver=keep")
    assert [p["metadata"]["uid"] for p in pods] == [pod["metadata"]["uid"]]  # no new pod
    assert report(kubectl, kube, rns, "keep")["env"]["MOTD"] == "one"
    out = subprocess.run([str(pathlib.Path(os.sys.executable).parent / "kubectl-peon"), "-n", rns,
                          "status", "keep"], env={**os.environ, "KUBECONFIG": kubeconfig,
                                                  "PEON_CLOCK_FILE": str(rn_clock.path)},
                         capture_output=True, text=True, timeout=60)
    assert "Waiting:" in out.stdout and "new settings waits: 2 players on" in out.stdout, out

    # The players leave: applied at once.
    for who in ("alice", "bob"):
        assert udp(ip, port, f"LEAVE {who}") == f"BYE {who}"
    rep = wait_for("MOTD two", lambda: (lambda r: r if r["env"].get("MOTD") == "two" else None)(
        report(kubectl, kube, rns, "keep")), 180)
    assert rep["pid"] and server_pod(kube, rns, "keep")["metadata"]["uid"] != pod["metadata"]["uid"]
    wait_event(kube, rns, "keep", "ChangeApplied", "nobody is on")
    assert said_in_game(kubectl, kube, rns, "keep") == []  # nobody was warned: nobody was on

    # Again with 2 players on; this time they stay: warned at 10, 5 and 1 minutes through the
    # game's RCON console, then the change is applied at the deadline with them on.
    wait_phase(kube, rns, "keep", "Running", timeout=180)
    pod = two_players_on(kube, rns, "keep")
    apply_as_user(kube, spec(MOTD="three"))
    m = held_change(kube, rns, "keep")
    deadline = kube.status_of("GameServer", rns, "keep")["maintenance"]["deadline"]
    expected = []
    for minutes_before, words in ((10, "10 minutes"), (5, "5 minutes"), (1, "1 minute ")):
        rn_clock.set(clock_parse(deadline) - dt_minutes(minutes_before))
        expected.append(f"say [Peon] The server restarts in {words.strip()} (new settings).")
        wait_for(f"the {words.strip()} warning", lambda: len(said_in_game(
            kubectl, kube, rns, "keep")) >= len(expected), 30)
        assert said_in_game(kubectl, kube, rns, "keep") == expected
    assert server_pod(kube, rns, "keep")["metadata"]["uid"] == pod["metadata"]["uid"]
    wait_event(kube, rns, "keep", "PlayersWarned")
    rn_clock.set(clock_parse(deadline))
    wait_for("MOTD three", lambda: (lambda r: r if r["env"].get("MOTD") == "three" else None)(
        report(kubectl, kube, rns, "keep")), 180)
    wait_event(kube, rns, "keep", "ChangeApplied", "deadline", "2 players on")
    # kubectl peon rcon: one command through a port-forward to the pod, over the API server.
    wait_phase(kube, rns, "keep", "Running", timeout=180)
    plugin = str(pathlib.Path(os.sys.executable).parent / "kubectl-peon")
    got = subprocess.run([plugin, "-n", rns, "rcon", "keep", "say", "hello from kubectl"],
                         env={**os.environ, "KUBECONFIG": kubeconfig}, capture_output=True,
                         text=True, timeout=60)
    assert (got.returncode, got.stdout) == (0, "say hello from kubectl\n"), got.stderr
    assert said_in_game(kubectl, kube, rns, "keep")[-1] == "say hello from kubectl"
    got = subprocess.run([plugin, "-n", rns, "console", "keep"], input="players\nexit\n",
                         env={**os.environ, "KUBECONFIG": kubeconfig}, capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.startswith("players (0/10)"), (got.stdout, got.stderr)
    logged = rn_operator.log()
    assert "rcon-pass-1" not in logged + got.stdout + got.stderr  # never logged nor shown
    rn_clock.reset()


def clock_parse(text):
    import datetime as dt
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def dt_minutes(n):
    import datetime as dt
    return dt.timedelta(minutes=n)


class real_time:
    """The operator's clock follows the real time while the block runs (rn_clock holds a fixed
    time otherwise): a schedule is then met as it is in production, second by second."""

    def __init__(self, clock: Clock):
        import threading
        self.clock, self.stop = clock, threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self):
        while not self.stop.wait(0.2):
            self.clock.reset()

    def __enter__(self):
        self.clock.reset()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.clock.reset()


def test_a_scheduled_restart_warns_the_players_at_the_set_times_then_restarts(
        kube, kubectl, rns, testgame, rn_operator, rn_clock):
    """restartSchedule (cron in a time zone) with 2 players on: warned through the game's RCON
    at 2 and 1 minutes before the slot, then a new pod. Durations in the schema are whole
    minutes and a cron's are too, so this is the fastest honest setting: the slot 2m20s to 3m20s
    after the schedule is set."""
    import datetime as dt
    from zoneinfo import ZoneInfo
    zone = "Asia/Kolkata"  # UTC+05:30, no summer time: a schedule read as UTC fires 5.5 h off
    settings = [{"type": "env", "name": "env",
                 "content": {"SERVER_PASS": "hunter22", "RCON_PASSWORD": "rcon-pass-2"}}]
    maintenance = {"maxDelay": "1h", "warnings": ["2m", "1m"]}
    with real_time(rn_clock):
        apply_as_user(kube, tg_server("sched", rns, settings=settings, maintenance=maintenance))
        wait_phase(kube, rns, "sched", "Running", timeout=180)
        pod = two_players_on(kube, rns, "sched")

        now = dt.datetime.now(dt.timezone.utc)
        slot = (now + dt.timedelta(minutes=2, seconds=80)).replace(second=0, microsecond=0)
        local = slot.astimezone(ZoneInfo(zone))
        cron = f"{local.minute} {local.hour} * * *"
        apply_as_user(kube, tg_server("sched", rns, settings=settings, maintenance={
            **maintenance, "restartSchedule": {"cron": cron, "timeZone": zone}}))
        m = wait_for("the next restart in status", lambda: (lambda m: m if m.get("nextRestart")
                                                            else None)(
            maintenance_of(kube, rns, "sched")), 30)
        assert clock_parse(m["nextRestart"]) == slot, (m, cron)
        # Adding a schedule rolls nothing.
        assert server_pod(kube, rns, "sched")["metadata"]["uid"] == pod["metadata"]["uid"]

        expected = [f"say [Peon] The server restarts in {w} (scheduled restart)."
                    for w in ("2 minutes", "1 minute")]
        for n, before in ((1, 120), (2, 60)):
            said = wait_for(f"warning {n}", lambda: (lambda c: c if len(c) >= n else None)(
                [c for c in report(kubectl, kube, rns, "sched")["console"]
                 if c["command"].startswith("say ")]), 240, interval=1)
            assert [c["command"] for c in said] == expected[:n]
            at = clock_parse(said[-1]["at"])
            # Said at its time: never early, and within the operator's next looks.
            assert slot - dt.timedelta(seconds=before) <= at <= \
                slot - dt.timedelta(seconds=before - 10), (said[-1], slot)
            assert server_pod(kube, rns, "sched")["metadata"]["uid"] == pod["metadata"]["uid"]
        assert dt.datetime.now(dt.timezone.utc) < slot  # no restart before its slot

        new = wait_for("the restart's new pod", lambda: (lambda p: p if p["metadata"]["uid"] !=
                                                         pod["metadata"]["uid"] else None)(
            server_pod(kube, rns, "sched", timeout=240)), 240, interval=1)
    started = clock_parse(new["metadata"]["creationTimestamp"])
    # Timestamps are whole seconds (truncated), so a restart begun in the slot's first moments can
    # read a second early.
    assert slot - dt.timedelta(seconds=1) <= started <= slot + dt.timedelta(seconds=20), (started, slot)
    wait_event(kube, rns, "sched", "ScheduledRestart")
    restarted = [e for e in events_for(kube, rns, "sched") if e["reason"] == "ScheduledRestart"]
    assert len(restarted) == 1 and "2 players on" in restarted[0]["message"], restarted
    m = maintenance_of(kube, rns, "sched")
    assert clock_parse(m["lastRestart"]) == slot
    assert clock_parse(m["nextRestart"]) == slot + dt.timedelta(days=1)  # the same local time
    wait_event(kube, rns, "sched", "PlayersWarned")
    # The new pod runs; nobody was left to warn, and nothing more was said.
    wait_phase(kube, rns, "sched", "Running", timeout=180)
    assert [c for c in report(kubectl, kube, rns, "sched")["console"]
            if c["command"].startswith("say ")] == []
    assert "rcon-pass-2" not in rn_operator.log()


def test_a_wrong_rcon_password_is_said_and_never_shown(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, rn_clock):
    """The console's password in a Secret the server names (secretRef), changed while the
    running pod keeps the one it started with: the warnings and `kubectl peon rcon` are refused
    by the game, and that is said (ConsoleFailed, status, the command's error), password unshown."""
    rn_clock.reset()
    right, wrong = "right-rcon-pass-3", "wrong-rcon-pass-3"
    kube.create({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "rcon-keys", "namespace": rns},
                 "stringData": {"RCON_PASSWORD": right}})
    apply_as_user(kube, tg_server("pw", rns, maintenance={"maxDelay": "1h"}, settings=[
        {"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}},
        {"type": "env", "name": "rcon", "secretRef": {"name": "rcon-keys"}}]))
    wait_phase(kube, rns, "pw", "Running", timeout=180)
    plugin = str(pathlib.Path(os.sys.executable).parent / "kubectl-peon")
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    got = subprocess.run([plugin, "-n", rns, "rcon", "pw", "say", "right"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert (got.returncode, got.stdout) == (0, "say right\n"), got.stderr  # the right one works
    pod = two_players_on(kube, rns, "pw")

    # The Secret changed: a change held with players on; the pod keeps the right password.
    kube.raw("PATCH", f"/api/v1/namespaces/{rns}/secrets/rcon-keys",
             {"stringData": {"RCON_PASSWORD": wrong}},
             content_type="application/merge-patch+json")
    held_change(kube, rns, "pw", 90)
    deadline = maintenance_of(kube, rns, "pw")["deadline"]
    try:
        rn_clock.set(clock_parse(deadline) - dt_minutes(10))
        failed = wait_for("ConsoleFailed", lambda: [e for e in events_for(kube, rns, "pw")
                                                    if e["reason"] == "ConsoleFailed"], 30)
        assert "refused the password" in failed[0]["message"], failed
        assert failed[0]["type"] == "Warning"
        m = wait_for("status says it", lambda: (lambda m: m if m.get("console") else None)(
            maintenance_of(kube, rns, "pw")), 30)
        assert m["console"].startswith("players cannot be warned:") and \
            "refused the password" in m["console"], m
        assert not any(e["reason"] == "PlayersWarned" for e in events_for(kube, rns, "pw"))
        assert said_in_game(kubectl, kube, rns, "pw") == ["say right"]  # no warning got through
        assert server_pod(kube, rns, "pw")["metadata"]["uid"] == pod["metadata"]["uid"]

        got = subprocess.run([plugin, "-n", rns, "rcon", "pw", "say", "hi"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert got.returncode != 0 and got.stdout == "", got
        assert "refused the password" in got.stderr and "Traceback" not in got.stderr, got.stderr
        shown = got.stdout + got.stderr + rn_operator.log() + "".join(
            e["message"] for e in events_for(kube, rns, "pw")) + json.dumps(
            kube.status_of("GameServer", rns, "pw"))
        assert right not in shown and wrong not in shown
    finally:
        rn_clock.reset()  # the operator's clock back, whatever failed


@pytest.fixture
def loopback_registry(real_node, tmp_path):
    """The test game 1.0 served by a registry on 127.0.0.1 (registry_helpers.py), exported from
    the real node's containerd: the one way a pod's `Always` pull can succeed on the bed."""
    from realnode_helpers import bed_node, bed_realnode
    from registry_helpers import Registry
    archive = tmp_path / "testgame.oci.tar"
    node = bed_node(0)
    ref = next(r for r in bed_realnode().ctr("images", "ls", "-q", socket=node.socket)
               .stdout.decode().split() if r.endswith(f"{IMAGE}:1.0"))
    bed_realnode().ctr("images", "export", str(archive), ref, socket=node.socket)
    reg = Registry(str(archive), "testgame", "1.0")
    yield reg
    reg.close()


def test_an_update_of_an_empty_server_backs_up_then_pulls_the_image_again(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, rn_clock, loopback_registry,
        tmp_path):
    """`kubectl peon update` on a running server nobody is on: a BeforeUpdate backup, then a
    new pod whose game container asks imagePullPolicy Always, and the node really pulls the
    image again (the registry on loopback sees the manifest asked after the backup); the API's
    server object shows the update."""
    import datetime as dt
    reg = loopback_registry
    with real_time(rn_clock):  # the backup's and the update's times are compared with the pod's
        apply_as_user(kube, tg_server("upd2", rns, image=reg.image, maintenance={"maxDelay": "1h"}))
        wait_phase(kube, rns, "upd2", "Running", timeout=180)
        pod = server_pod(kube, rns, "upd2")
        first = [c for c in pod["spec"]["containers"] if c["name"] == "server"][0]
        assert first["image"] == reg.image and first.get("imagePullPolicy") != "Always"
        assert reg.manifest_requests(), "the first pod pulled from the loopback registry"
        wait_for("nobody on, in status", lambda: players_online(kube, rns, "upd2") == 0, 60)
        asked = time.time()
        got = subprocess.run([str(pathlib.Path(os.sys.executable).parent / "kubectl-peon"), "-n",
                              rns, "update", "upd2"], env={**os.environ, "KUBECONFIG": kubeconfig},
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        bk = wait_for("the BeforeUpdate backup", lambda: next(
            (b for b in kube.list("GameServerBackup", rns)
             if b["spec"].get("reason") == "BeforeUpdate"
             and (b.get("status") or {}).get("phase") == "Succeeded"), None), 180)
        new = wait_for("the update's new pod", lambda: (lambda p: p if p["metadata"]["uid"] !=
                                                        pod["metadata"]["uid"] else None)(
            server_pod(kube, rns, "upd2", timeout=180)), 240, interval=1)
        wait_phase(kube, rns, "upd2", "Running", timeout=180)
    game = [c for c in new["spec"]["containers"] if c["name"] == "server"][0]
    assert game["image"] == reg.image and game["imagePullPolicy"] == "Always"
    assert "peon.dev/update" in new["metadata"].get("annotations", {})
    # The backup was done before the new pod started, and the pull came after both.
    done = clock_parse(bk["status"]["completionTime"])
    assert done <= clock_parse(new["metadata"]["creationTimestamp"]), (bk["status"], new["metadata"])
    pulls = reg.manifest_requests(since=asked)
    assert pulls, f"no pull after the update: {reg.requests[-5:]}"
    assert min(t for t, _, _ in pulls) >= done.timestamp() - 1, (pulls, done)
    wait_event(kube, rns, "upd2", "Updated")
    events = [e for e in events_for(kube, rns, "upd2") if e["reason"] == "Updated"]
    assert len(events) == 1 and f"{reg.image} pulled again" in events[0]["message"], events
    assert len([b for b in kube.list("GameServerBackup", rns)
                if b["spec"].get("reason") == "BeforeUpdate"]) == 1
    m = wait_for("the update in status", lambda: (lambda m: m if m.get("updatedAt") else None)(
        maintenance_of(kube, rns, "upd2")), 60)
    assert m["updatedImage"] == reg.image
    # The API's server object says it (issue 28, item 4).
    api = PeonApi(kubeconfig, rns, None, tmp_path / "api.log")
    try:
        status, obj = api.call("GET", f"/api/v1/server/get/{GAME}.upd2")
    finally:
        log = api.stop()
    assert status == 200, obj
    assert obj["last_update"]["image"] == reg.image
    assert obj["last_update"]["asked"] == int(clock_parse(m["lastUpdate"]).timestamp())
    assert obj["last_update"]["applied"] == int(clock_parse(m["updatedAt"]).timestamp())
    assert "Traceback" not in log
    assert dt.datetime.now(dt.timezone.utc) >= clock_parse(m["updatedAt"])


def test_the_api_console_route_reaches_the_game_for_an_admin_only(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, tmp_path):
    """POST /api/v1/server/console/{uid} with peon-api reading Secrets and Services as the
    chart's api.console: true lets it: the admin's command reaches the game's RCON at the
    server's Service and its answer comes back; a player's key is refused and nothing reaches
    the game; the password is in no answer or log."""
    import secrets as pysecrets
    password = "rcon-pass-4"
    apply_as_user(kube, tg_server("apic", rns, settings=[{"type": "env", "name": "env", "content": {
        "SERVER_PASS": "hunter22", "RCON_PASSWORD": password}}]))
    wait_phase(kube, rns, "apic", "Running", timeout=180)
    player = "p" * 8 + pysecrets.token_hex(8)
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(f"pal: {{key: {player}, role: player}}\n")
    api = PeonApi(kubeconfig, rns, None, tmp_path / "api.log", args=["--keys-file", str(keys_file)])
    path = f"/api/v1/server/console/{GAME}.apic"
    try:
        status, res = api.call("POST", path, {"command": "say from the api"})
        refused = api.call("POST", path, {"command": "say from a player"}, key=player)
        players = api.call("POST", path, {"command": "players"})
    finally:
        log = api.stop()
    assert status == 200 and res["answer"] == "say from the api", res
    assert refused[0] == 403, refused
    assert players[0] == 200 and players[1]["answer"].startswith("players (0/10)"), players
    assert said_in_game(kubectl, kube, rns, "apic") == ["say from the api"]  # not the player's
    wait_event(kube, rns, "apic", None, "console command")
    ran = [e for e in events_for(kube, rns, "apic") if "console command" in e["message"]]
    assert ran and not any("from the api" in e["message"] for e in ran)  # the command unsaid
    assert password not in log + json.dumps([res, refused, players]) and "Traceback" not in log


def test_an_update_with_players_on_is_backed_up_when_they_leave_just_before_the_roll(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, rn_clock, loopback_registry):
    """The BeforeUpdate backup is taken when the hold ends, not when the update is asked: while
    2 players are on nothing is backed up nor rolled; when they leave, the backup, then the
    pod with the image pulled again."""
    reg = loopback_registry
    with real_time(rn_clock):
        apply_as_user(kube, tg_server("upd3", rns, image=reg.image, maintenance={"maxDelay": "1h"}))
        wait_phase(kube, rns, "upd3", "Running", timeout=180)
        ip, port = service_address(kube, rns, "upd3")
        pod = two_players_on(kube, rns, "upd3")
        got = subprocess.run([str(pathlib.Path(os.sys.executable).parent / "kubectl-peon"), "-n",
                              rns, "update", "upd3"], env={**os.environ, "KUBECONFIG": kubeconfig},
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        m = wait_for("the update held", lambda: (lambda m: m if m.get("pending") else None)(
            maintenance_of(kube, rns, "upd3")), 60)
        assert m["pending"] == "an update (the image pulled again)" and m["reason"] == "PlayersOnline"
        time.sleep(8)
        assert [b for b in kube.list("GameServerBackup", rns)
                if b["spec"].get("reason") == "BeforeUpdate"] == []  # not yet: they still play
        assert server_pod(kube, rns, "upd3")["metadata"]["uid"] == pod["metadata"]["uid"]
        left = time.time()
        for who in ("alice", "bob"):
            assert udp(ip, port, f"LEAVE {who}") == f"BYE {who}"
        bk = wait_for("the BeforeUpdate backup", lambda: next(
            (b for b in kube.list("GameServerBackup", rns)
             if b["spec"].get("reason") == "BeforeUpdate"
             and (b.get("status") or {}).get("phase") == "Succeeded"), None), 180)
        new = wait_for("the update's new pod", lambda: (lambda p: p if p["metadata"]["uid"] !=
                                                        pod["metadata"]["uid"] else None)(
            server_pod(kube, rns, "upd3", timeout=180)), 240, interval=1)
    created = clock_parse(bk["metadata"]["creationTimestamp"]).timestamp()
    assert created >= left - 1, (bk["metadata"]["creationTimestamp"], left)  # asked when they left
    done = clock_parse(bk["status"]["completionTime"])
    assert done <= clock_parse(new["metadata"]["creationTimestamp"])
    game = [c for c in new["spec"]["containers"] if c["name"] == "server"][0]
    assert game["imagePullPolicy"] == "Always"
    assert reg.manifest_requests(since=done.timestamp() - 1)  # pulled again after the backup


def test_a_game_without_a_console_still_holds_and_says_players_cannot_be_warned(
        kube, kubectl, kubeconfig, rns, testgame, rn_operator, rn_clock):
    rn_clock.reset()
    game = yaml.safe_load(GAME_FILE.read_text())
    game["metadata"] = {"name": f"{GAME}-{rns}"}
    del game["spec"]["console"]
    kube.apply(game)
    env = {"SERVER_PASS": "hunter22", "RCON_PASSWORD": "rcon-pass-5"}

    def spec(motd):
        return tg_server("mute", rns, gameUid=game["metadata"]["name"],
                         maintenance={"maxDelay": "1h"},
                         settings=[{"type": "env", "name": "env", "content": {**env, "MOTD": motd}}])
    try:
        apply_as_user(kube, spec("one"))
        wait_phase(kube, rns, "mute", "Running", timeout=180)
        ip, port = service_address(kube, rns, "mute")
        pod = two_players_on(kube, rns, "mute")
        apply_as_user(kube, spec("two"))
        m = held_change(kube, rns, "mute")
        assert m["reason"] == "PlayersOnline"
        assert m["console"] == "players cannot be warned: the Game declares no console"
        # At the first warning's time nothing is said, and nothing fails: still held.
        rn_clock.set(clock_parse(m["deadline"]) - dt_minutes(10))
        time.sleep(5)
        events = [(e["reason"], e["message"], e.get("count")) for e in events_for(kube, rns, "mute")]
        reasons = [e[0] for e in events]
        assert "PlayersWarned" not in reasons and "ConsoleFailed" not in reasons, events
        print("\nevents of mute:", *events, sep="\n  ")
        assert maintenance_of(kube, rns, "mute")["console"] == \
            "players cannot be warned: the Game declares no console"
        assert server_pod(kube, rns, "mute")["metadata"]["uid"] == pod["metadata"]["uid"]
        assert said_in_game(kubectl, kube, rns, "mute") == []
        out = subprocess.run([str(pathlib.Path(os.sys.executable).parent / "kubectl-peon"), "-n",
                              rns, "status", "mute"], env={**os.environ, "KUBECONFIG": kubeconfig},
                             capture_output=True, text=True, timeout=60)
        assert "players cannot be warned: the Game declares no console" in out.stdout, out
        # They leave: applied.
        for who in ("alice", "bob"):
            assert udp(ip, port, f"LEAVE {who}") == f"BYE {who}"
        wait_for("MOTD two", lambda: (lambda r: r if r["env"].get("MOTD") == "two" else None)(
            report(kubectl, kube, rns, "mute")), 180)
    finally:
        rn_clock.reset()
        kube.delete("GameServer", rns, "mute")
        wait_for("the server to go", lambda: kube.get("GameServer", rns, "mute") is None, 120)
        kube.delete("Game", None, game["metadata"]["name"])
