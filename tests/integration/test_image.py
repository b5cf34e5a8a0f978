"""The operator image, built with Docker Engine on a base image made with debootstrap: it
reconciles a GameServer on the local control plane, and its archive tool round-trips a world on
real Docker volumes. Docker Engine comes from Debian's docker.io (`make docker-deps`); where it
cannot run, these tests report skipped."""
import json
import pathlib
import shutil
import socket
import subprocess
import urllib.request
import uuid

import pytest

from gs_helpers import apply_as_user, gameserver, wait_phase

# The first test also pays for debootstrap, the wheels and the image build.
pytestmark = pytest.mark.timeout(900)
ROOT = pathlib.Path(__file__).resolve().parents[2]
TAG = "peon.local/peon-operator:test"


def sh(*args, check=True, **kw):
    return subprocess.run(args, capture_output=True, text=True, check=check, **kw)


@pytest.fixture(scope="session")
def image():
    """The operator image, as `tools/images operator` builds it (dockerd started if need be)."""
    if shutil.which("dockerd") is None:
        pytest.skip("Docker Engine is not installed (make docker-deps installs Debian's docker.io)")
    built = subprocess.run([str(ROOT / "tools" / "images"), "operator"], capture_output=True,
                           text=True)
    if built.returncode != 0 and "dockerd did not start" in built.stderr:
        pytest.skip(built.stderr.strip()[-500:])
    assert built.returncode == 0, built.stderr[-3000:]
    return TAG


def test_image_runs_as_non_root_and_carries_both_commands(image):
    out = sh("docker", "run", "--rm", "--read-only", "--entrypoint", "sh", image, "-c",
             "id -u; peon-operator --help >/dev/null && peon archive --help >/dev/null && echo ok").stdout
    assert out.split() == ["10001", "ok"]


def test_operator_in_the_container_reconciles_a_gameserver(image, kube, kubectl, kubeconfig, crds,
                                                          tmp_path):
    ns = f"img-{uuid.uuid4().hex[:6]}"
    # The container runs as uid 10001; the bed's kubeconfig is root's and 0600.
    readable = tmp_path / "kubeconfig"
    shutil.copy(kubeconfig, readable)
    readable.chmod(0o644)
    kubeconfig = str(readable)
    kubectl("create", "namespace", ns)
    name = f"peon-test-{uuid.uuid4().hex[:6]}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        sh("docker", "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "-v", f"{kubeconfig}:/kube/config:ro", "-e", "KUBECONFIG=/kube/config",
           image, "--namespace", ns, "--liveness", f"http://127.0.0.1:{port}/healthz")
        apply_as_user(kube, gameserver("boxed", ns))
        g = wait_phase(kube, ns, "boxed", "Running", timeout=90)
        assert kube.get("Deployment", ns, "boxed")
        assert g["status"]["game"] == "valheim"
        # kopf's liveness endpoint, which the chart's probes use, answers.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        logs = sh("docker", "logs", name, check=False)
        sh("docker", "rm", "-f", name, check=False)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr[-2000:]


def test_archive_tool_round_trips_a_world_on_real_volumes(image):
    vols = [f"peon-{v}-{uuid.uuid4().hex[:6]}" for v in ("data", "backups", "restored")]
    for v in vols:
        sh("docker", "volume", "create", v)
    run = ["docker", "run", "--rm", "--user", "0", "--entrypoint", "sh",
           "-v", f"{vols[0]}:/data", "-v", f"{vols[1]}:/backups", "-v", f"{vols[2]}:/restored", image, "-c"]
    listing = ("cd {d} && find . -mindepth 1 | sort | while read f; do "
               "if [ -L \"$f\" ]; then echo \"$f link $(readlink \"$f\")\"; "
               "elif [ -f \"$f\" ]; then echo \"$f $(stat -c %a:%u:%g \"$f\") $(sha256sum < \"$f\" | cut -c1-16)\"; "
               "else echo \"$f dir $(stat -c %a \"$f\")\"; fi; done")
    try:
        sh(*run, "mkdir -p /data/worlds/deep && head -c 5000000 /dev/urandom > /data/worlds/w.db "
                 "&& echo hi > /data/worlds/deep/n.txt && : > /data/empty && chmod 640 /data/worlds/w.db "
                 "&& chown 1000:1000 /data/worlds/w.db && ln -s worlds/w.db /data/current")
        created = json.loads(sh(*run, "peon archive create /data /backups/b.tar.gz").stdout)
        assert created["files"] == 3 and len(created["sha256"]) == 64
        restored = sh(*run, f"peon archive restore /backups/b.tar.gz /restored --sha256 {created['sha256']}")
        assert json.loads(restored.stdout)["sha256"] == created["sha256"]
        before = sh(*run, listing.format(d="/data")).stdout
        after = sh(*run, listing.format(d="/restored")).stdout
        assert before == after and "1000:1000" in before and "link worlds/w.db" in before
    finally:
        sh("docker", "volume", "rm", "-f", *vols, check=False)
