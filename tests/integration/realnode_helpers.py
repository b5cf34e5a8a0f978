"""Helpers for tests on the bed's real node: the test game's pods, what the process reports,
UDP to the game, and the bytes of a world on the machine's disk."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pathlib
import sys
import socket
import stat
import subprocess
import tarfile
import time

import pytest

from kube_helpers import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
GAME_FILE = ROOT / "tests" / "realnode" / "testgame" / "game.yaml"
GAME = "peon-testgame"
IMAGE = "peon.local/testgame"
OPERATOR_IMAGE = "peon.local/peon-operator:test"
NODE = "real-node-0"
TAINT = "testbed.peon.dev/real-node"
ON_REAL_NODE = {"nodeSelector": {"kubernetes.io/hostname": NODE}}
STATE = pathlib.Path(os.environ.get("PEON_CLUSTER_STATE", ROOT / ".cluster"))
NETCHECK_IMAGE = "peon.local/netcheck:1"  # the bed's TCP echo (tools/testbed/netcheck.c)


def tg_server(name: str, ns: str, password: str = "hunter22", **spec) -> dict:
    base = {"gameUid": GAME, "serverName": name, "scheduling": ON_REAL_NODE,
            "settings": [{"type": "env", "name": "env", "content": {"SERVER_PASS": password}}]}
    base.update(spec)
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
            "metadata": {"name": name, "namespace": ns}, "spec": base}


def server_pod(kube, ns: str, name: str, timeout: float = 120) -> dict:
    """The server's one live, ready pod."""
    def ready():
        pods = [p for p in kube.list("Pod", ns, f"peon.dev/gameserver={name}")
                if not p["metadata"].get("deletionTimestamp")
                and "job-name" not in p["metadata"].get("labels", {})]
        live = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in p.get("status", {}).get("conditions") or [])]
        return live[0] if len(live) == 1 and len(pods) == 1 else \
            f"{len(pods)} pods: {[p.get('status', {}).get('phase') for p in pods]}"
    return wait_for(f"the one ready pod of {ns}/{name}", ready, timeout, interval=0.5)


def exec_in(kubectl, ns: str, pod: str, *cmd: str) -> str:
    return kubectl("-n", ns, "exec", pod, "-c", "server", "--", *cmd).stdout


def report(kubectl, kube, ns: str, name: str) -> dict:
    """What the game process says it read and runs (testgame report, through kubectl exec).
    The pod is chosen again on each try: a rollout may replace the one chosen before."""
    return wait_for("the game's report", lambda: _report(
        kubectl, ns, server_pod(kube, ns, name)["metadata"]["name"]), 120, interval=0.5)


def _report(kubectl, ns, pod):
    out = kubectl("-n", ns, "exec", pod, "-c", "server", "--", "testgame", "report", check=False)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else out.stderr


def udp(host: str, port: int, message: str, timeout: float = 1.0, tries: int = 20) -> str:
    """One datagram, one answer; retried, since a fresh pod's port may not be bound yet."""
    last = None
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                s.sendto(message.encode(), (host, port))
                return s.recv(2048).decode()
            except OSError as e:
                last = e
        time.sleep(0.5)
    raise AssertionError(f"no answer from {host}:{port} to {message!r}: {last}")


def service_address(kube, ns: str, name: str, port_name: str = "game") -> tuple[str, int]:
    """The Service's cluster IP and port: kube-proxy turns it into the real pod's address."""
    svc = kube.get("Service", ns, name)
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == port_name)
    return svc["spec"]["clusterIP"], port


def volume_dir(kube, ns: str, claim: str) -> pathlib.Path:
    """Where a claim's bytes are on this machine (the bed's hostPath provisioner)."""
    pvc = kube.get("PersistentVolumeClaim", ns, claim)
    pv = kube.get("PersistentVolume", None, pvc["spec"]["volumeName"])
    return pathlib.Path(pv["spec"]["hostPath"]["path"])


def tree_digest(root: pathlib.Path) -> dict[str, str]:
    """Every regular file under root, by relative path, to its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def fingerprint(root: pathlib.Path, full_mode: bool = False) -> dict[str, tuple]:
    """Every entry under root: its content's SHA-256 (a file), its link target or "dir", its
    mode (the permission bits, or with full_mode st_mode whole) and owner. lost+found at the top
    and Peon's own .peon- leftovers are not the world."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".peon-")
                       and not (d == "lost+found" and pathlib.Path(dirpath) == root)]
        for name in dirnames + filenames:
            if name.startswith(".peon-"):
                continue
            p = pathlib.Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                what = "->" + os.readlink(p)
            elif p.is_file():
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = "dir"
            mode = st.st_mode if full_mode else stat.S_IMODE(st.st_mode)
            out[str(p.relative_to(root))] = (what, mode, st.st_uid, st.st_gid)
    return out


def node_ip(kube, node: str) -> str:
    obj = kube.get("Node", None, node)
    return next(a["address"] for a in obj["status"]["addresses"] if a["type"] == "InternalIP")


@contextlib.contextmanager
def store_on_node(kube, node: str, data: pathlib.Path):
    """SeaweedFS on a real node's InternalIP (the bed's bridge gateway, an address of this
    machine), which the node's pods reach: the off-site store. The bed's own only (a cluster of
    the user's has no side of its bridge here)."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("the store runs on this machine's side of the bed's bridge; a cluster of "
                    "the user's has none")
    from seaweedfs import SeaweedFS, build
    weed = build("seaweedfs")
    assert weed, "SeaweedFS could not be built (tools/testbed/build-gotool seaweedfs)"
    server = SeaweedFS(weed, data, ip=node_ip(kube, node))
    try:
        yield server
    finally:
        server.stop()


def archive_digest(path: pathlib.Path) -> dict[str, bytes]:
    """Every regular file in a Peon archive, by relative path, to its bytes."""
    out = {}
    with tarfile.open(path, "r:gz") as t:
        for m in t.getmembers():
            if m.isfile() and not m.name.endswith(".peon-manifest.json"):
                out[m.name.removeprefix("./")] = t.extractfile(m).read()
    return out


def bed_realnode():
    """tools/testbed/realnode.py, the module that runs the bed's real nodes."""
    if "bed_realnode" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bed_realnode", ROOT / "tools" / "testbed" / "realnode.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bed_realnode"] = module
        spec.loader.exec_module(module)
    return sys.modules["bed_realnode"]


def bed_node(index: int = 0):
    """The bed's real node `index` (real-node-<index>): power_cut() and power_on(kubectl)
    play it losing its power and getting it back. `tools/cluster up --real-nodes N` makes them."""
    return bed_realnode().RealNode.of_bed(STATE, ROOT, index)


@contextlib.contextmanager
def two_real_nodes_joined(kubectl):
    """real-node-0 and real-node-1 (`tools/cluster up --real-nodes 2`) for the `with` body;
    after it the second has its power back, and goes again when the body's caller made it."""
    if os.environ.get("PEON_REAL_NODE") == "0":
        pytest.skip("PEON_REAL_NODE=0: the run was asked to go without real nodes")
    if os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG names a cluster of the user's: a power cut needs the bed's own "
                    "nodes (tools/cluster up --real-nodes 2)")
    had_second = (STATE / "realnode-1").exists()
    t0 = time.monotonic()
    up = subprocess.run([str(ROOT / "tools/cluster"), "up", "--real-nodes", "2"],
                        capture_output=True, text=True)
    if up.returncode != 0:
        why = STATE / "realnode-unavailable"
        if why.exists():
            pytest.skip(f"this machine cannot run real nodes: {why.read_text()[:500]}")
        raise AssertionError(up.stderr[-3000:])
    print(f"\ntwo real nodes: up in {time.monotonic() - t0:.1f}s")
    nodes = [bed_node(0), bed_node(1)]
    try:
        yield nodes
    finally:
        if nodes[1].cut():  # whatever happened, the bed goes on with its node powered
            nodes[1].power_on(lambda *a, **kw: kubectl(*a, **kw).stdout)
        if not had_second and not os.environ.get("PEON_DEBUG_KEEP"):
            nodes[1].down(lambda *a, **kw: kubectl(*a, **kw).stdout)
