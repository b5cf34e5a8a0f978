#!/usr/bin/env python3
"""How fast does Peon bring N GameServers to Running, against the floor?

    floor     the same child objects (rendered by the same code) created directly through the
              API with the same concurrency, until every Deployment is ready
    operator  N GameServers applied with that concurrency, until every one is Running with
              all its children

Prints both times and their ratio (operator / floor), then holds the operator idle and prints
the API writes it made meanwhile (target: zero), and its peak memory.

    bench/converge.py [--n 100] [--concurrency 8] [--idle 60]

Uses KUBECONFIG when set, else the local test bed (tools/cluster up).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))

from kube_helpers import K, client_for  # noqa: E402
from peon.model import parse_game, parse_gameserver  # noqa: E402
from peon.render import render  # noqa: E402

GAME = {"apiVersion": "peon.dev/v1alpha1", "kind": "Game", "metadata": {"name": "bench"},
        "spec": {"title": "Benchmark game", "source": "https://peon.invalid/bench",
                 "image": "peon.invalid/bench:1",
                 "ports": [{"name": "game", "containerPort": 7777, "protocol": "UDP"},
                           {"name": "query", "containerPort": 7778, "protocol": "UDP"}],
                 "env": [{"name": "SERVER_NAME", "default": "$(PEON_SERVER_NAME)"}],
                 "dataPath": "/data", "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                 "storage": {"size": "1Gi"}}}


def gameserver(i: int, ns: str) -> dict:
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
            "metadata": {"name": f"s{i:04d}", "namespace": ns},
            "spec": {"gameUid": "bench", "serverName": f"Server {i}", "network": {"type": "ClusterIP"},
                     "settings": [{"type": "env", "name": "env", "content": {"PASSWORD": f"pw{i}"}},
                                  {"type": "txt", "name": "motd.txt", "content": f"hello {i}\n"}]}}


def kubeconfig() -> str:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    subprocess.run([str(ROOT / "tools" / "cluster"), "up"], check=True)
    return str(ROOT / ".cluster" / "kubeconfig")


def wait(what: str, done, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if done():
            return time.monotonic()
        time.sleep(1.0)  # each check lists every object; polling faster would load the API
    raise SystemExit(f"bench: timed out waiting for {what}")


def ready_deployments(kube: K, ns: str) -> int:
    return sum(1 for d in kube.list("Deployment", ns)
               if (d.get("status") or {}).get("readyReplicas") == 1)


def floor(kube: K, n: int, conc: int, timeout: float) -> float:
    ns = f"bench-floor-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    game = parse_game(GAME)
    objs = []
    for i in range(n):
        gs = gameserver(i, ns)
        gs["metadata"]["uid"] = str(uuid.uuid4())
        for child in render(parse_gameserver(gs), game):
            child["metadata"].pop("ownerReferences", None)  # no owner exists in the floor run
            objs.append(child)
    t0 = time.monotonic()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(kube.apply, objs))
    t1 = wait("the floor's deployments", lambda: ready_deployments(kube, ns) == n, timeout)
    # Tear the floor down completely before the operator's run, so that its garbage
    # collection is not measured as the operator's time.
    kube.delete("Namespace", None, ns)
    wait("the floor's namespace to be gone", lambda: kube.get("Namespace", None, ns) is None, timeout)
    return t1 - t0


def metric_total(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    kc = kubeconfig()
    kube = K(client_for(kc))
    kube.api.configuration.connection_pool_maxsize = max(32, args.concurrency * 2)
    subprocess.run(["kubectl", "--kubeconfig", kc, "apply", "--server-side", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True, env=_env())
    subprocess.run(["kubectl", "--kubeconfig", kc, "wait", "--for=condition=Established",
                    "-f", str(ROOT / "crds")], check=True, capture_output=True, env=_env())
    kube.apply(GAME)

    t_floor = floor(kube, args.n, args.concurrency, args.timeout)
    print(f"floor:    {args.n} servers' children created directly, all ready in {t_floor:.2f} s")

    ns = f"bench-op-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    port = _free_port()
    log = open(ROOT / ".cluster" / "bench-operator.log" if (ROOT / ".cluster").exists()
               else os.devnull, "wb")
    op = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "peon-operator"),
                           "--namespace", ns, "--workers", str(args.concurrency),
                           "--metrics-port", str(port)],
                          env=dict(os.environ, KUBECONFIG=kc), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait("the operator's metrics", lambda: _up(port), 60)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(kube.create, [gameserver(i, ns) for i in range(args.n)]))

        def all_running() -> bool:
            items = kube.list("GameServer", ns)
            return len(items) == args.n and all(
                (g.get("status") or {}).get("phase") == "Running" for g in items)
        t1 = wait("every GameServer Running", all_running, args.timeout)
        t_op = t1 - t0
        assert ready_deployments(kube, ns) == args.n
        print(f"operator: {args.n} GameServers Running with all children in {t_op:.2f} s")
        print(f"ratio:    {t_op / t_floor:.2f} (operator / floor, concurrency {args.concurrency})")
        writes_converge = metric_total(port, "peon_api_writes_total")
        time.sleep(3)  # the last watch events of the rollout
        before = metric_total(port, "peon_api_writes_total")
        time.sleep(args.idle)
        after = metric_total(port, "peon_api_writes_total")
        print(f"converge: {writes_converge:.0f} API writes ({writes_converge / args.n:.1f} per server)")
        print(f"idle:     {after - before:.0f} API writes in {args.idle:.0f} s idle (target 0)")
        print(f"memory:   operator peak RSS {peak_rss_mib(op.pid):.0f} MiB")
    finally:
        op.terminate()
        op.wait(30)
        kube.delete("Namespace", None, ns)


def _env() -> dict:
    env = dict(os.environ)
    info = ROOT / ".cluster" / "cluster.json"
    if not os.environ.get("KUBECONFIG") and info.exists():
        env["PATH"] = json.loads(info.read_text())["bin"] + os.pathsep + env["PATH"]
    return env


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(port: int) -> bool:
    try:
        metric_total(port, "peon_api_writes_total")
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
