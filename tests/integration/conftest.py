"""Integration fixtures: a real control plane (the test bed, or any cluster KUBECONFIG points
at), a fresh namespace per test, and the operator running as users run it."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest

import realnode_helpers
from kube_helpers import K, client_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
STATE = pathlib.Path(os.environ.get("PEON_CLUSTER_STATE", ROOT / ".cluster"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # A test that brings the bed down and makes a new one runs in a session of its own: after
    # it, the session's clients, operators and real node would be the old bed's.
    alone = [item for item in items if item.get_closest_marker("rebuilds_bed")]
    if alone and len(alone) < len(items):
        skip = pytest.mark.skip(reason="it brings the bed down and makes a new one, so it runs in "
                                "a pytest session of its own (`make test` runs it after the suite)")
        for item in alone:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kubeconfig():
    """KUBECONFIG when set (kind, k3d, a cloud); otherwise the test bed, started here and
    stopped at the end unless it was already running or PEON_KEEP_CLUSTER is set."""
    if os.environ.get("KUBECONFIG"):
        yield os.environ["KUBECONFIG"]
        return
    was_running = subprocess.run([str(ROOT / "tools/cluster"), "status"],
                                 capture_output=True).returncode == 0
    subprocess.run([str(ROOT / "tools/cluster"), "up"], check=True)
    yield str(STATE / "kubeconfig")
    if not was_running and not os.environ.get("PEON_KEEP_CLUSTER"):
        subprocess.run([str(ROOT / "tools/cluster"), "down"], check=False)
        # A dockerd that the image builds started goes too; one that was running before stays.
        subprocess.run([str(ROOT / "tools/images"), "stop-docker"], check=False)


@pytest.fixture(scope="session")
def kubectl_bin(kubeconfig) -> str:
    info = STATE / "cluster.json"
    if not os.environ.get("KUBECONFIG") and info.exists():
        return str(pathlib.Path(json.loads(info.read_text())["bin"]) / "kubectl")
    return "kubectl"


@pytest.fixture(scope="session")
def kube(kubeconfig) -> K:
    return K(client_for(kubeconfig))


@pytest.fixture(scope="session")
def kubectl(kubeconfig, kubectl_bin):
    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([kubectl_bin, "--kubeconfig", kubeconfig, *args], input=input,
                              capture_output=True, text=True, check=check)
    return run


def fresh_namespace(kube, prefix: str):
    """A namespace of its own for one test, deleted after it (the prefix says which operator
    watches it: t-* the session's, r-* the real node's)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.delete("Namespace", None, name)


@pytest.fixture
def namespace(kube):
    yield from fresh_namespace(kube, "t")


@pytest.fixture(scope="session")
def crds(kube, kubectl):
    """Peon's CRDs and game catalogue, installed once."""
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "-f", str(ROOT / "examples" / "games"))
    return True


class Operator:
    """`peon-operator` in a subprocess, as a user runs it."""

    def __init__(self, kubeconfig: str, log_path: pathlib.Path, args: list[str] = (),
                 clock_file: pathlib.Path | None = None):
        self.log_path = log_path
        env = dict(os.environ, KUBECONFIG=kubeconfig)
        if clock_file:
            env["PEON_CLOCK_FILE"] = str(clock_file)
        exe = pathlib.Path(sys.executable).parent / "peon-operator"  # the console script
        self.proc = subprocess.Popen([str(exe), *args],
                                     stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    @classmethod
    @contextlib.contextmanager
    def running(cls, kubeconfig: str, log_path: pathlib.Path, args: list[str],
                clock_file: pathlib.Path | None = None, tracebacks_allowed: bool = False):
        """The operator, alive for the `with` body (a fixture's yield) and stopped after it;
        then its log holds no Traceback unless allowed."""
        op = cls(kubeconfig, log_path, args, clock_file)
        time.sleep(0.5)
        assert op.proc.poll() is None, op.log()
        try:
            yield op
        finally:
            op.stop()
        assert tracebacks_allowed or "Traceback" not in op.log(), op.log()[-3000:]


class Clock:
    """The operator's clock (PEON_CLOCK_FILE). It starts at the real time and only moves forward."""

    def __init__(self, path: pathlib.Path):
        import datetime as dt
        self.path, self.dt = path, dt
        self.set(dt.datetime.now(dt.timezone.utc))

    def now(self):
        return self.dt.datetime.fromisoformat(self.path.read_text().strip())

    def set(self, when) -> None:
        real = self.dt.datetime.now(self.dt.timezone.utc)
        self._write(max(when, real))

    def _write(self, when) -> None:
        # Whole or not at all: the operator reads the file at any moment, and a read between
        # write_text's truncate and its write found it empty and took the real time for now.
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(when.isoformat())
        os.replace(part, self.path)

    def reset(self) -> None:
        """Back to the real time, for a test that compares the clock with API timestamps."""
        self._write(self.dt.datetime.now(self.dt.timezone.utc))

    def advance(self, **delta) -> None:
        self.set(self.now() + self.dt.timedelta(**delta))


@pytest.fixture(scope="session")
def clock(tmp_path_factory) -> Clock:
    return Clock(tmp_path_factory.mktemp("clock") / "now")


# --- the real node (one instance for the whole run: a fixture imported into a test module
# would be a second instance, paying for the node's bring-up and images again) ---------------

@pytest.fixture(scope="session")
def real_node(kubeconfig, kube):
    """real-node-0 joined to the bed, with the operator and test game images imported.
    On a cluster of the user's (KUBECONFIG), a node labelled testbed.peon.dev/node=real."""
    if os.environ.get("PEON_REAL_NODE") == "0":
        pytest.skip("PEON_REAL_NODE=0: the run was asked to go without the real node")
    if os.environ.get("KUBECONFIG"):
        nodes = kube.list("Node", None, "testbed.peon.dev/node=real")
        if not nodes:
            pytest.skip("KUBECONFIG names a cluster without a node labelled "
                        "testbed.peon.dev/node=real (tools/cluster up --real-node makes one)")
        return nodes[0]["metadata"]["name"]
    t0 = time.monotonic()
    up = subprocess.run([str(ROOT / "tools/cluster"), "up", "--real-node"],
                        capture_output=True, text=True)
    if up.returncode != 0:
        why = (STATE / "realnode-unavailable")
        if why.exists():
            pytest.skip(f"this machine cannot run the real node: {why.read_text()[:500]}")
        raise AssertionError(up.stderr[-3000:])
    t_node = time.monotonic() - t0
    images = subprocess.run([str(ROOT / "tools/images")], capture_output=True, text=True)
    assert images.returncode == 0, images.stderr[-3000:]
    print(f"\nreal node: up in {t_node:.1f}s; images built and imported in "
          f"{time.monotonic() - t0 - t_node:.1f}s")
    return realnode_helpers.NODE


@pytest.fixture(scope="session")
def testgame(real_node, kubectl, crds):
    kubectl("apply", "--server-side", "-f", str(realnode_helpers.GAME_FILE))
    return realnode_helpers.GAME


@pytest.fixture(scope="session")
def rn_clock(tmp_path_factory) -> Clock:
    return Clock(tmp_path_factory.mktemp("rn-clock") / "now")


@pytest.fixture(scope="session")
def operator(kubeconfig, crds, tmp_path_factory, clock):
    # Test namespaces only (t-*): other tests run operators of their own elsewhere. Webhooks
    # may reach the tests' receivers on 127.0.0.1, and only there. Tests here feed it bad
    # input on purpose, so a Traceback alone does not fail the run.
    with Operator.running(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                          ["--job-image", "peon.invalid/peon-operator:test", "--namespace", "t-*",
                           "--notify-allow-cidr", "127.0.0.1/32"],
                          clock_file=clock.path, tracebacks_allowed=True) as op:
        yield op
    # Whatever a test did, the operator must not have printed a password.
    assert "hunter22" not in op.log() and "password123" not in op.log()


@pytest.fixture(scope="session")
def helm(kubeconfig, kubectl_bin):
    exe = str(pathlib.Path(kubectl_bin).parent / "helm") if "/" in kubectl_bin else "helm"

    def run(*args, check=True, input=None):
        return subprocess.run([exe, "--kubeconfig", kubeconfig, *args], capture_output=True,
                              text=True, check=check, input=input)
    return run
