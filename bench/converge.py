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
then the writes it makes while held idle (target: zero), then a restart of the operator: how
long until it has looked at every server, and what it writes (target: nothing). Targets (issue
24): at N=1,000 a ratio within 1.15, at most 6 writes per server, at most 15 ms operator CPU per
server, peak RSS at most 100 MiB, 0 idle writes; N=10,000 over 10 namespaces (--namespaces 10
--no-floor) with CPU per server at most 1.2x N=1,000's and peak RSS at most 500 MiB; a restart
on 1,000 converged servers writes nothing and looks at every server within 30 s.

    bench/converge.py [--n 100[,1000]] [--concurrency 8] [--idle 60] [--namespaces 1]
                      [--no-floor] [--restart-watch 30]

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
from kubernetes.utils import parse_quantity  # noqa: E402
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
    if args.no_floor:
        return operator_run(kube, kc, n, args)
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


def start_operator(kc: str, namespaces: list[str], args, log_name: str):
    """`peon-operator` serving `namespaces`, with its metrics on a free port."""
    port = _free_port()
    log = open(ROOT / ".cluster" / log_name if (ROOT / ".cluster").exists() else os.devnull, "wb")
    op = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "peon-operator"),
                           *[a for ns in namespaces for a in ("--namespace", ns)],
                           "--workers", str(args.concurrency), "--metrics-port", str(port)],
                          env=dict(os.environ, KUBECONFIG=kc), stdout=log, stderr=subprocess.STDOUT)
    return op, port


def stop_operator(op) -> None:
    op.terminate()
    op.wait(30)


def operator_run(kube: K, kc: str, n: int, args) -> dict:
    tag = uuid.uuid4().hex[:6]
    namespaces = [f"bench-op-{tag}-{j}" for j in range(args.namespaces)]
    for ns in namespaces:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    op, port = start_operator(kc, namespaces, args, "bench-operator.log")
    try:
        wait("the operator's metrics", lambda: _up(port), 60)
        cpu0 = cpu_seconds(op.pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(kube.create, [gameserver(i, namespaces[i % len(namespaces)])
                                        for i in range(n)]))

        def all_running() -> bool:
            running = 0
            for ns in namespaces:
                items = cached_list(kube, "GameServer", ns)
                running += sum((g.get("status") or {}).get("phase") == "Running" for g in items)
            return running == n
        t1 = wait("every GameServer Running", all_running, args.timeout)
        cpu = cpu_seconds(op.pid) - cpu0
        t_op = t1 - t0
        assert sum(ready_deployments(kube, ns) for ns in namespaces) == n
        print(f"operator: {n} GameServers in {len(namespaces)} namespace(s) Running with all "
              f"children in {t_op:.2f} s", flush=True)
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
        stop_operator(op)
        row.update(restart(kc, namespaces, n, args))
        return row
    finally:
        if op.poll() is None:
            stop_operator(op)
        for ns in namespaces:
            tear_down(kube, ns, args.timeout)


def restart(kc: str, namespaces: list[str], n: int, args) -> dict:
    """A new operator process over the converged servers: how long until it has looked at
    every one (its reconciles reach the servers and their Game, counted from the process's
    start), and what it writes (target: nothing) within `args.restart_watch` seconds."""
    t0 = time.monotonic()
    op, port = start_operator(kc, namespaces, args, "bench-operator-restart.log")
    try:
        wait("the restarted operator's metrics", lambda: _up(port), 60)
        games = len(K(client_for(kc)).raw("GET", path("Game"))["items"])  # each is looked at too
        looked = wait("the restarted operator to look at every server",
                      lambda: metric_total(port, "peon_reconciles_total") >= n + games,
                      args.timeout) - t0
        time.sleep(max(0.0, args.restart_watch - (time.monotonic() - t0)))
        by_kind = metric_samples(port, "peon_api_writes_total")
        writes = sum(by_kind.values())
        # A restart reads every object at once: its memory peak is its own, and the chart's
        # limit (512Mi) must hold it as well as the converged operator's.
        rss = peak_rss_mib(op.pid)
        print(f"restart:  looked at all {n} servers {looked:.1f} s after the process started "
              f"(target at most 30 s); {writes:.0f} API writes in its first "
              f"{time.monotonic() - t0:.0f} s (target 0)"
              + (": " + ", ".join(f"{v:.0f} {k}" for k, v in by_kind.items() if v) if writes else "")
              + f"; peak RSS {rss:.0f} MiB", flush=True)
        return {"restart_look": looked, "restart_writes": writes, "restart_rss": rss}
    finally:
        stop_operator(op)


def ensure_kwok_capacity(kube: K, pods: int) -> None:
    """Enough kwok nodes for `pods` pods (5,000 a node, as tools/cluster registers them): the bed
    has two; N=10,000 servers and the bed's own pods need more."""
    nodes = [nd for nd in kube.raw("GET", "/api/v1/nodes")["items"]
             if (nd["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake"]
    have = sum(int(parse_quantity(nd["status"]["allocatable"]["pods"])) for nd in nodes)  # "5k"
    i = 0
    while have < pods + 500:
        name = f"kwok-bench-{i}"
        i += 1
        if any(nd["metadata"]["name"] == name for nd in nodes):
            continue
        kube.create({"apiVersion": "v1", "kind": "Node",
                     "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                                  "labels": {"kubernetes.io/hostname": name, "type": "kwok",
                                             "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                     "spec": {},
                     "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "5000"},
                                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "5000"}}})
        have += 5000
        print(f"bed:      added kwok node {name} (5,000 pods)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100", help="servers; several as 100,1000,3000")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--namespaces", type=int, default=1,
                    help="spread the servers over this many namespaces (the operator serves each)")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the floor runs (for a size where only CPU per server and memory "
                         "are the targets, such as N=10,000)")
    ap.add_argument("--restart-watch", type=float, default=30,
                    help="seconds after a restart in which the operator's writes are counted")
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
    ensure_kwok_capacity(kube, max(int(n) for n in args.n.split(",")))
    rows = [run(kube, kc, int(n), args) for n in args.n.split(",")]
    print("\n|     N | NS | floor s (before, after) | operator s | ratio | writes/server "
          "| CPU ms/server | peak RSS MiB | idle writes | restart: look s | restart writes "
          "| restart: RSS MiB |")
    print("|------:|---:|------------------------:|-----------:|------:|--------------:"
          "|--------------:|-------------:|------------:|----------------:|---------------:"
          "|-----------------:|")
    for r in rows:
        floors = (f"{r['floor']:.1f} ({r['floor_before']:.1f}, {r['floor_after']:.1f})"
                  if "floor" in r else "not run")
        ratio = f"{r['ratio']:5.2f}" if "ratio" in r else "    -"
        print(f"| {r['n']:5d} | {args.namespaces:2d} | {floors:>23} | {r['operator']:10.1f} | {ratio} "
              f"| {r['writes']:13.1f} | {r['cpu'] * 1000:13.1f} "
              f"| {r['rss']:12.0f} | {r['idle']:11.0f} | {r['restart_look']:15.1f} "
              f"| {r['restart_writes']:14.0f} | {r['restart_rss']:16.0f} |")
    print("targets (issue 24): at N=1,000 a ratio within 1.15, at most 6 writes per server, at most "
          "15 ms operator CPU per server, peak RSS at most 100 MiB; at N=10,000 CPU per server at "
          "most 1.2x N=1,000's and peak RSS at most 500 MiB; a restart writes nothing and looks at "
          "every server within 30 s")
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
