"""The README's walk-through for a user's own cluster, run as written: every block marked
`<!-- readme-test: NAME -->` is run by bash, verbatim, in order, on a fresh control plane of its
own (a user's cluster starts empty: no CRDs, no catalogue, nothing the suite installed).

kwok plays the nodes, so the chart's operator pod never really runs; between the blocks the test
runs `peon-operator` in its place, logged in as the chart's ServiceAccount with the chart's
arguments, as the pod would."""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import re
import subprocess

import pytest

from conftest import Operator
from gs_helpers import token_kubeconfig
from kube_helpers import K, client_for, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```bash\n(.*?)```", re.S)


def blocks() -> dict[str, str]:
    return dict(MARK.findall(README.read_text()))


def test_every_command_of_the_walk_through_is_tested():
    text = README.read_text()
    section = text[text.index("## On your cluster"):]
    section = section[:section.index("\n## ", 1)]
    fenced = section.count("```bash")
    marked = len(MARK.findall(section))
    assert fenced == marked, "a bash block in 'On your cluster' has no readme-test marker"
    assert list(blocks()) == ["install", "upgrade", "run", "address", "stop-start", "uninstall",
                            "wake"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, kubeconfig):
    """A control plane of its own. (`kubeconfig` first: the suite's bed is built and up.)"""
    state = tmp_path_factory.mktemp("readme-cluster")
    env = dict(os.environ, PEON_CLUSTER_STATE=str(state))
    env.pop("PEON_REAL_NODE", None)  # the real nodes are the main bed's (one set per machine)
    env.pop("PEON_REAL_NODES", None)
    env.pop("KUBECONFIG", None)
    subprocess.run([str(ROOT / "tools/cluster"), "up"], env=env, check=True)
    try:
        binpath = json.loads((state / "cluster.json").read_text())["bin"]
        yield {"kubeconfig": str(state / "kubeconfig"), "bin": binpath, "dir": state}
    finally:
        subprocess.run([str(ROOT / "tools/cluster"), "down"], env=env, check=False)


def run_block(fresh, name: str) -> str:
    env = dict(os.environ, KUBECONFIG=fresh["kubeconfig"],
               PATH=f"{fresh['bin']}:{os.environ['PATH']}")
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks()[name]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"README block {name!r} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def operator_as_the_chart_runs_it(fresh, kube: K) -> Operator:
    kubectl = [f"{fresh['bin']}/kubectl", "--kubeconfig", fresh["kubeconfig"]]
    token = subprocess.run([*kubectl, "-n", "peon-system", "create", "token", "peon-peon-operator"],
                           capture_output=True, text=True, check=True).stdout.strip()
    kc = token_kubeconfig(fresh["kubeconfig"], token, fresh["dir"] / "operator.kubeconfig")
    dep = kube.get("Deployment", "peon-system", "peon-peon-operator")
    args = [a for a in dep["spec"]["template"]["spec"]["containers"][0]["args"]
            if not a.startswith(("--liveness", "--metrics-port"))]  # ports: not API calls
    return Operator(kc, fresh["dir"] / "operator.log", args)


def test_the_walk_through_on_a_fresh_cluster(fresh):
    kube = K(client_for(fresh["kubeconfig"]))
    out = run_block(fresh, "install")
    assert {"valheim", "minecraft", "factorio"} <= set(out.split())
    # An upgrade from a release whose Game CRD had no status (the one before Game's Valid):
    # Helm alone would leave that CRD, and the operator could never say a Game is broken.
    kube.raw("PATCH", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/games.peon.dev",
             [{"op": "remove", "path": "/spec/versions/0/subresources"}],
             content_type="application/json-patch+json")
    run_block(fresh, "upgrade")
    crd = kube.get("CustomResourceDefinition", None, "games.peon.dev")
    assert crd["spec"]["versions"][0].get("subresources") == {"status": {}}
    op = operator_as_the_chart_runs_it(fresh, kube)
    wait_for("the catalogue judged", lambda: (kube.get("Game", None, "valheim").get("status") or {})
             .get("conditions", [{}])[0].get("status") == "True")
    try:
        out = run_block(fresh, "run")
        assert re.search(r"^vikings\s+valheim\s+Running\s+Running\s", out, re.M), out

        endpoint, *ports = run_block(fresh, "address").splitlines()
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", endpoint), endpoint
        assert any(p.startswith("game ") and p.endswith("/UDP") for p in ports), ports

        run_block(fresh, "stop-start")
        asked = kube.get("GameServer", "games", "vikings")["metadata"]["annotations"]["peon.dev/restartedAt"]
        wait_for("the restart rolled into the pod template", lambda: kube.get(
            "Deployment", "games", "vikings")["spec"]["template"]["metadata"]
            .get("annotations", {}).get("peon.dev/restartedAt") == asked)

        # The wake-up needs a server outside its uptime windows: give it one that opens in 6 h.
        now = dt.datetime.now(dt.timezone.utc)
        opens, closes = ((now + dt.timedelta(hours=h)).strftime("%H:%M") for h in (6, 7))
        kube.raw("PATCH", "/apis/peon.dev/v1alpha1/namespaces/games/gameservers/vikings",
                 {"spec": {"uptime": {"timeZone": "UTC",
                                      "windows": [{"start": opens, "end": closes}]}}},
                 content_type="application/merge-patch+json")
        uptime_reason = lambda: (kube.get("GameServer", "games", "vikings").get("status", {})
                                 .get("uptime", {}).get("reason"))
        wait_for("the server stopped outside its window", lambda: uptime_reason() == "OutsideWindow"
                 and kube.status_of("GameServer", "games", "vikings").get("phase") == "Stopped", 60)
        run_block(fresh, "wake")
        wait_for("the server woken up", lambda: uptime_reason() == "WokenUp"
                 and kube.status_of("GameServer", "games", "vikings").get("phase") == "Running", 60)

        run_block(fresh, "uninstall")
    finally:
        op.stop()
    assert "Forbidden" not in op.log(), op.log()[-2000:]
    assert kube.get("GameServer", "games", "vikings") is None
    assert kube.get("PersistentVolumeClaim", "games", "vikings-data"), "the world was lost"
    assert kube.get("Deployment", "peon-system", "peon-peon-operator") is None
    assert kube.get("Game", None, "valheim"), "the catalogue outlives the release"
    assert kube.get("CustomResourceDefinition", None, "gameservers.peon.dev")  # the CRDs stay
