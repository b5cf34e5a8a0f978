#!/usr/bin/env python3
"""From `kubectl apply` to a game answering Steam A2S on the bed's real node, against the floor.

    floor     the children Peon would make for the server (rendered by the same code: Secret,
              claim, Deployment, Service) created directly through the API, until the game
              answers A2S_INFO through its Service
    operator  the GameServer applied as a user applies it, until the game answers the same way

Each round uses a fresh namespace and a fresh world; the two alternate so drift on the machine
hits both. Prints each time, the medians and their ratio (operator / floor).

    bench/realnode.py [--rounds 3]

Needs the bed with its real node and the images (`tools/cluster up --real-node`, `tools/images`);
runs the operator itself. Traffic: A2S to Service IPs whose endpoints are real pods on the bed's
bridge, nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import uuid

import a2s
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from kube_helpers import K, client_for  # noqa: E402
from peon.shared.model import parse_game, parse_gameserver  # noqa: E402
from peon.shared.render import render  # noqa: E402
from realnode_helpers import GAME_FILE, OPERATOR_IMAGE, tg_server  # noqa: E402


def answers_a2s(kube: K, ns: str, name: str) -> bool:
    svc = kube.get("Service", ns, name)
    if not svc:
        return False
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "query")
    # Only once the Service has a ready endpoint: a real pod on the bridge, never a kwok address.
    slices = kube.list("EndpointSlice", ns, f"kubernetes.io/service-name={name}")
    if not any(e.get("conditions", {}).get("ready") for s in slices for e in s.get("endpoints") or []):
        return False
    try:
        a2s.info((svc["spec"]["clusterIP"], port), timeout=0.5)
        return True
    except Exception:
        return False


def until_answering(kube: K, ns: str, name: str, t0: float, timeout: float = 300) -> float:
    while time.monotonic() - t0 < timeout:
        if answers_a2s(kube, ns, name):
            return time.monotonic() - t0
        time.sleep(0.1)
    raise SystemExit(f"bench: {ns}/{name} did not answer A2S within {timeout}s")


def floor_round(kube: K, game: dict) -> float:
    ns = f"bf-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    gs = tg_server("floor", ns)
    gs["metadata"]["uid"] = str(uuid.uuid4())
    children = render(parse_gameserver(gs), parse_game(game), helper_image=OPERATOR_IMAGE)
    for c in children:
        c["metadata"].pop("ownerReferences", None)
    t0 = time.monotonic()
    for c in children:
        kube.create(c)
    took = until_answering(kube, ns, "floor", t0)
    kube.delete("Namespace", None, ns)
    return took


def operator_round(kube: K) -> float:
    ns = f"bo-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    t0 = time.monotonic()
    kube.apply(tg_server("bench", ns))
    took = until_answering(kube, ns, "bench", t0)
    kube.delete("Namespace", None, ns)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    subprocess.run([str(ROOT / "tools" / "cluster"), "up", "--real-node"], check=True)
    subprocess.run([str(ROOT / "tools" / "images")], check=True, stdout=subprocess.DEVNULL)
    kc = os.environ.get("KUBECONFIG") or str(ROOT / ".cluster" / "kubeconfig")
    kube = K(client_for(kc))
    kubectl = pathlib.Path(json.loads((ROOT / ".cluster" / "cluster.json").read_text())["bin"]) / "kubectl"
    subprocess.run([str(kubectl), "--kubeconfig", kc, "apply", "--server-side", "-f", str(ROOT / "crds"),
                    "-f", str(GAME_FILE)], check=True, stdout=subprocess.DEVNULL)
    game = yaml.safe_load(GAME_FILE.read_text())
    log = open(ROOT / ".cluster" / "logs" / "bench-operator.log", "wb")
    op = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "peon-operator"),
                           "--namespace", "bo-*", "--job-image", OPERATOR_IMAGE],
                          stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, KUBECONFIG=kc))
    try:
        time.sleep(2)
        floors, ops = [], []
        for i in range(args.rounds):
            floors.append(floor_round(kube, game))
            ops.append(operator_round(kube))
            print(f"round {i + 1}: floor {floors[-1]:.2f}s  operator {ops[-1]:.2f}s", flush=True)
    finally:
        op.terminate()
        op.wait(15)
    f, o = statistics.median(floors), statistics.median(ops)
    print(f"apply -> A2S answer on the real node: floor {f:.2f}s, operator {o:.2f}s, "
          f"ratio {o / f:.2f} (median of {args.rounds})")


if __name__ == "__main__":
    main()
