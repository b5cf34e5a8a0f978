#!/usr/bin/env python3
"""How fast does Peon bring N GameServers to Running, against the floor?

    floor     the same child objects (rendered by the same code) created directly through the
              API with the same concurrency, until every Deployment is ready
    operator  N GameServers applied with that concurrency, until every one is Running with
              all its children

The floor is measured twice, before and after the operator's run, and the ratio is taken
against their mean: a bed slows as it ages (etcd grows, the API server's heap), so a floor
measured only before would charge that drift to the operator, which always runs second.

For each N: the times and their ratio (operator / floor), the operator's API writes per server
(and by verb and kind), its CPU seconds per server and peak memory,
then the writes it makes while held idle (target: zero). Targets (issue 12): at N=1,000 a ratio
within 1.3, at most 8 writes per server, peak RSS at most 150 MiB, 0 idle writes; CPU seconds per
server at N=3,000 no more than 1.2x those at N=1,000.

    bench/converge.py [--n 100[,1000,3000]] [--concurrency 8] [--idle 60]

The bed's controller-manager and scheduler run with --kube-api-qps=300 (tools/cluster), so
the floor measures the API server, not client-go's default 20 QPS; the bench prints what the
running controller-manager was given.

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
from peon.shared.kube import path  # noqa: E402
from peon.shared.model import parse_game, parse_gameserver  # noqa: E402
from peon.shared.render import render  # noqa: E402

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


def cached_list(kube: K, kind: str, ns: str) -> list[dict]:
    """Every `kind` in `ns` from the API server's watch cache (resourceVersion=0). A plain LIST
    is read from etcd: every second, 1,000 GameServers (JSON, decoded as unstructured) cost
    the API server far more than 1,000 Deployments (protobuf), which charged the poll of the
    operator's run, not the operator."""
    return kube.raw("GET", path(kind, ns), query=[("resourceVersion", "0")])["items"]


def volumes_of(kube: K, ns: str) -> int:
    """PersistentVolumes of claims of `ns` still to be deleted: cluster-scoped, they outlive
    the namespace and are deleted by the controller-manager after it. A class that retains
    its volumes (reclaimPolicy Retain) keeps them: those are not waited for."""
    pvs = kube.raw("GET", "/api/v1/persistentvolumes", query=[("resourceVersion", "0")])["items"]
    return sum(1 for pv in pvs
               if ((pv.get("spec") or {}).get("claimRef") or {}).get("namespace") == ns
               and (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete")


def tear_down(kube: K, ns: str, timeout: float) -> None:
    """Delete `ns` and wait until its objects and its claims' volumes are gone, so that the
    next run does not pay for this one's garbage collection."""
    kube.delete("Namespace", None, ns)
    wait(f"namespace {ns} to be gone", lambda: kube.get("Namespace", None, ns) is None, timeout)
    wait(f"the volumes of {ns} to be gone", lambda: volumes_of(kube, ns) == 0, timeout)


def ready_deployments(kube: K, ns: str) -> int:
    return sum(1 for d in cached_list(kube, "Deployment", ns)
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
    tear_down(kube, ns, timeout)
    return t1 - t0


def metric_samples(port: int, name: str) -> dict[str, float]:
    """A counter's samples by their labels, e.g. {'verb="apply",kind="Secret"': 1000.0}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            out[series[len(name):].strip("{}")] = float(value)
    return out


def metric_total(port: int, name: str) -> float:
    return sum(metric_samples(port, name).values())


def peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def controller_manager_qps() -> str:
    """What the running kube-controller-manager was given (local bed only)."""
    for proc in pathlib.Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"kube-controller-manager"):
            qps = [a.decode() for a in argv if a.startswith(b"--kube-api-")]
            return " ".join(qps) or "client-go's defaults (20 QPS, burst 30)"
    return "not found on this machine"


def run(kube: K, kc: str, n: int, args) -> dict:
    before = floor(kube, n, args.concurrency, args.timeout)
    print(f"floor:    {n} servers' children created directly, all ready in {before:.2f} s", flush=True)
    row = operator_run(kube, kc, n, args)
    after = floor(kube, n, args.concurrency, args.timeout)
    t_floor = (before + after) / 2
    row.update(floor=t_floor, floor_before=before, floor_after=after, ratio=row["operator"] / t_floor)
    print(f"floor:    again after the operator's run: {after:.2f} s (mean {t_floor:.2f} s)")
    print(f"ratio:    {row['ratio']:.2f} (operator / mean floor, concurrency {args.concurrency}; "
          f"{row['operator'] / before:.2f} against the floor before alone)", flush=True)
    return row


def operator_run(kube: K, kc: str, n: int, args) -> dict:
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
        cpu0 = cpu_seconds(op.pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(kube.create, [gameserver(i, ns) for i in range(n)]))

        def all_running() -> bool:
            items = cached_list(kube, "GameServer", ns)
            return len(items) == n and all(
                (g.get("status") or {}).get("phase") == "Running" for g in items)
        t1 = wait("every GameServer Running", all_running, args.timeout)
        cpu = cpu_seconds(op.pid) - cpu0
        t_op = t1 - t0
        assert ready_deployments(kube, ns) == n
        print(f"operator: {n} GameServers Running with all children in {t_op:.2f} s", flush=True)
        time.sleep(3)  # the last watch events of the rollout
        reconciles = metric_total(port, "peon_reconciles_total")
        by_kind = metric_samples(port, "peon_api_writes_total")
        writes = sum(by_kind.values())
        time.sleep(args.idle)
        idle = metric_total(port, "peon_api_writes_total") - writes
        row = {"n": n, "operator": t_op, "writes": writes / n, "cpu": cpu / n,
               "rss": peak_rss_mib(op.pid), "idle": idle}
        print(f"converge: {writes:.0f} API writes ({row['writes']:.1f} per server: "
              + ", ".join(f"{v / n:.2f} {k.replace('verb=', '').replace('kind=', '')}"
                          for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]) if v) + ")")
        print(f"cpu:      {cpu:.1f} operator CPU seconds ({row['cpu'] * 1000:.1f} ms per server; "
              f"{reconciles / n:.1f} reconciles per server)")
        print(f"idle:     {idle:.0f} API writes in {args.idle:.0f} s idle (target 0)")
        print(f"memory:   operator peak RSS {row['rss']:.0f} MiB", flush=True)
        return row
    finally:
        op.terminate()
        op.wait(30)
        tear_down(kube, ns, args.timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100", help="servers; several as 100,1000,3000")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()

    kc = kubeconfig()
    kube = K(client_for(kc))
    kube.api.configuration.connection_pool_maxsize = max(32, args.concurrency * 2)
    subprocess.run(["kubectl", "--kubeconfig", kc, "apply", "--server-side", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True, env=_env())
    subprocess.run(["kubectl", "--kubeconfig", kc, "wait", "--for=condition=Established",
                    "-f", str(ROOT / "crds")], check=True, capture_output=True, env=_env())
    kube.apply(GAME)
    print(f"bed:      kube-controller-manager {controller_manager_qps()}")
    rows = [run(kube, kc, int(n), args) for n in args.n.split(",")]
    print("\n|     N | floor s (before, after) | operator s | ratio | writes/server "
          "| CPU ms/server | peak RSS MiB | idle writes |")
    print("|------:|------------------------:|-----------:|------:|--------------:"
          "|--------------:|-------------:|------------:|")
    for r in rows:
        floors = f"{r['floor']:.1f} ({r['floor_before']:.1f}, {r['floor_after']:.1f})"
        print(f"| {r['n']:5d} | {floors:>23} | {r['operator']:10.1f} | {r['ratio']:5.2f} "
              f"| {r['writes']:13.1f} | {r['cpu'] * 1000:13.1f} "
              f"| {r['rss']:12.0f} | {r['idle']:11.0f} |")
    if len(rows) > 1:
        print(f"cpu per server at N={rows[-1]['n']} / N={rows[-2]['n']}: "
              f"{rows[-1]['cpu'] / rows[-2]['cpu']:.2f} (target at most 1.2: linear cost)")


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
