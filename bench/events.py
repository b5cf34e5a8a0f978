#!/usr/bin/env python3
"""How much CPU does the operator spend on one watch event?

An operator watches a namespace of its own; the bench applies N labelled ConfigMaps (as the
operator's children are labelled, each naming a server), changes each once and deletes each:
3N watch events, each of which the operator caches and turns into a queued reconcile (of a
server that does not exist, so the reconcile itself is cheap). Printed: the operator's CPU
seconds over those events, per event, against the floor of the same run: the CPU that the
bench's own thread spends reading the same events from a bare watch (parse the line, keep the
object).

    bench/events.py [--n 1000]

Uses KUBECONFIG when set, else the local test bed (tools/cluster up).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))

from kube_helpers import K, client_for  # noqa: E402
from peon import LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY  # noqa: E402
from peon.shared.kube import Kube  # noqa: E402

from converge import _free_port, _up, cpu_seconds, kubeconfig, wait  # noqa: E402


def config_map(ns: str, i: int, version: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"c{i:05d}", "namespace": ns,
                         "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_GAMESERVER: f"s{i:05d}"}},
            "data": {"version": version, "motd.txt": "x" * 3000}}


def bare_watch(kc: str, ns: str, expected: int, out: dict) -> None:
    """Read the namespace's ConfigMap events from a bare watch until `expected` came."""
    kube = Kube(client_for(kc))
    resp = kube.dynamic.request("GET", f"/api/v1/namespaces/{ns}/configmaps",
                                query_params=[("watch", "true"),
                                              ("labelSelector", f"{LABEL_MANAGED_BY}={MANAGED_BY}")],
                                header_params={"Accept": "application/json"}, serialize=False)
    start, kept, n, rest = time.thread_time(), {}, 0, b""
    for chunk in resp.stream(1 << 16):
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            event = json.loads(line)
            kept[event["object"]["metadata"]["name"]] = event["object"]
            n += 1
        if n >= expected:
            break
    out["cpu"], out["events"] = time.thread_time() - start, n
    resp.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    kc = kubeconfig()
    kube = K(client_for(kc))
    kube.api.configuration.connection_pool_maxsize = 32
    ns = f"bench-events-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    port = _free_port()
    op = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "peon-operator"),
                           "--namespace", ns, "--metrics-port", str(port)],
                          env=dict(os.environ, KUBECONFIG=kc),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    floor: dict = {}
    try:
        wait("the operator's metrics", lambda: _up(port), 60)
        time.sleep(3)  # its streams listed the (empty) namespace
        reader = threading.Thread(target=bare_watch, args=(kc, ns, 3 * args.n, floor), daemon=True)
        reader.start()
        time.sleep(1)
        cpu0 = cpu_seconds(op.pid)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: kube.apply(config_map(ns, i, "1")), range(args.n)))
            list(pool.map(lambda i: kube.apply(config_map(ns, i, "2")), range(args.n)))
            list(pool.map(lambda i: kube.delete("ConfigMap", ns, f"c{i:05d}"), range(args.n)))
        reader.join(120)
        time.sleep(5)  # the operator's last events and the reconciles they queued
        cpu = cpu_seconds(op.pid) - cpu0
    finally:
        op.terminate()
        op.wait(30)
        kube.delete("Namespace", None, ns)
    events = 3 * args.n
    print(f"operator: {cpu:.2f} CPU seconds for {events} watch events "
          f"({cpu / events * 1000:.3f} ms per event, each cached and queueing a reconcile)")
    print(f"floor:    {floor.get('cpu', float('nan')):.2f} CPU seconds of a bare watch for "
          f"{floor.get('events', 0)} events ({floor.get('cpu', float('nan')) / events * 1000:.3f} ms per event)")
    print(f"ratio:    {cpu / floor['cpu']:.1f}" if floor.get("cpu") else "ratio:    (no floor)")


if __name__ == "__main__":
    main()
