"""Several replicas: exactly one reconciles (the holder of a Lease), the others write nothing;
when the leader dies another takes over, and a leader that stops hands the Lease on."""
import socket
import time
import urllib.request
import uuid

import pytest

from conftest import Operator
from gs_helpers import apply_as_user, gameserver, wait_phase
from kube_helpers import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica(Operator):
    """One replica, as the chart runs it: leader election on, metrics on a port of its own."""

    def __init__(self, kubeconfig, tmp_path, ns, n):
        self.port = free_port()
        super().__init__(kubeconfig, tmp_path / f"replica-{n}.log",
                         ["--namespace", ns, "--leader-elect", "--leader-election-namespace", ns,
                          "--metrics-port", str(self.port),
                          "--job-image", "peon.invalid/peon-operator:test"])

    def metric(self, name: str, having: str = "") -> float:
        """The sum of a metric's samples (those whose labels include `having`), as scraped."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if (line.startswith(name + "{") or line.startswith(name + " ")) and having in line)

    def scrapeable(self) -> bool:
        try:
            self.metric("peon_leading")
            return True
        except OSError:
            return False

    def identity(self) -> str | None:
        for line in self.log().splitlines():
            if "identity " in line:
                return line.rsplit("identity ", 1)[1].strip()
        return None


@pytest.fixture
def ha_namespace(kube, crds):
    # Not t-*: the suite's own operator watches those.
    name = f"ha-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.delete("Namespace", None, name)


def lease_holder(kube, ns: str) -> str | None:
    return kube.get("Lease", ns, "peon-operator")["spec"].get("holderIdentity")


def test_one_replica_reconciles_and_another_takes_over(kube, kubeconfig, ha_namespace, tmp_path):
    ns = ha_namespace
    replicas = [Replica(kubeconfig, tmp_path, ns, n) for n in range(2)]
    try:
        for r in replicas:
            wait_for("replica metrics", r.scrapeable, 30)
        wait_for("a leader", lambda: sum(r.metric("peon_leading") for r in replicas) == 1, 30)
        leader = next(r for r in replicas if r.metric("peon_leading") == 1)
        follower = next(r for r in replicas if r is not leader)
        assert lease_holder(kube, ns) == leader.identity()

        apply_as_user(kube, gameserver("ha", ns))
        wait_phase(kube, ns, "ha", "Running")
        assert leader.metric("peon_api_writes_total", 'kind="Deployment"') > 0
        assert leader.metric("peon_api_writes_total", 'kind="Lease"') > 0  # renewals count too
        # The follower saw it all (its watches run) and wrote nothing.
        assert follower.metric("peon_api_writes_total") == 0, follower.log()[-2000:]
        assert follower.metric("peon_reconciles_total") == 0

        # The leader dies without a word; the follower takes the Lease once it expires.
        leader.proc.kill()
        leader.proc.wait()
        killed = time.monotonic()
        apply_as_user(kube, gameserver("ha", ns, state="Stopped"))
        wait_phase(kube, ns, "ha", "Stopped", timeout=60)
        print(f"takeover after a kill: Stopped {time.monotonic() - killed:.1f} s after the kill")
        assert follower.metric("peon_leading") == 1
        assert lease_holder(kube, ns) == follower.identity()

        # A leader that is stopped (a rolling update, a drain) hands the Lease on at once.
        third = Replica(kubeconfig, tmp_path, ns, 2)
        replicas.append(third)
        wait_for("the new replica", third.scrapeable, 30)
        assert third.metric("peon_leading") == 0
        follower.stop()
        assert follower.proc.returncode == 0, follower.log()[-2000:]
        assert lease_holder(kube, ns) in (None, third.identity()), "the Lease was not released"
        stopped = time.monotonic()
        wait_for("the third replica to lead", lambda: third.metric("peon_leading") == 1, 30)
        print(f"handover after a stop: {time.monotonic() - stopped:.1f} s")
        apply_as_user(kube, gameserver("ha", ns, state="Running"))
        wait_phase(kube, ns, "ha", "Running")
        assert "lost the leader Lease" not in follower.log()
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.stop()
