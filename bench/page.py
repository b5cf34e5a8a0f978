#!/usr/bin/env python3
"""Peon's web page: bytes transferred and time to the server list in headless Chromium.

    bench/page.py [--servers 10] [--runs 5] [--idle 15]

On the bed (KUBECONFIG when set, else tools/cluster up): the CRDs and the catalogue applied,
N GameServers in a namespace of their own with a Running status (the page shows what status
says; no operator is needed to read it), `peon-api` over them, and Debian's chromium
(/usr/bin/chromium) driven by Playwright. Each run is a fresh browser context (nothing
cached) whose tab holds the key as a remembered one, so loading / is everything up to the list:
the page, its CSS and script, and the first /page/servers. Measured per run: the bytes the
browser received (Chrome's encodedDataLength over every request: headers and bodies, as
sent), and the time from the navigation's start to every server's card in the list (the
page's performance.now(), and the wall clock around it). Then the cost of staying open: the
bytes per poll while nothing changes (a 304: headers only, both ways). Targets (issue 27): at most 100 KB and 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))

from kube_helpers import K, client_for  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def kubeconfig() -> str:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    subprocess.run([str(ROOT / "tools" / "cluster"), "up"], check=True)
    return str(ROOT / ".cluster" / "kubeconfig")


def kubectl_bin() -> str:
    info = ROOT / ".cluster" / "cluster.json"
    if not os.environ.get("KUBECONFIG") and info.exists():
        return str(pathlib.Path(json.loads(info.read_text())["bin"]) / "kubectl")
    return "kubectl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(kube: K, kc: str, ns: str, n: int) -> None:
    kubectl = [kubectl_bin(), "--kubeconfig", kc]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True,
                   capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True)
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "examples" / "games" / "valheim.yaml")],
                   check=True, capture_output=True)
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i in range(n):
        name = f"server-{i:03d}"
        kube.create({"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
                     "metadata": {"name": name, "namespace": ns},
                     "spec": {"gameUid": "valheim", "serverName": f"Friends' server {i}"}})
        kube.raw("PATCH", f"/apis/peon.dev/v1alpha1/namespaces/{ns}/gameservers/{name}/status",
                 {"status": {"phase": "Running", "endpoint": f"203.0.113.{i % 250}:{2456 + i}",
                             "players": {"online": i % 5, "max": 10},
                             "backup": {"lastSuccessfulTime": now}}},
                 content_type="application/merge-patch+json")


def start_api(kc: str, ns: str, key: str, log: pathlib.Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([str(pathlib.Path(sys.executable).parent / "peon-api"), "--namespace", ns,
                             "--host", "127.0.0.1", "--port", str(port)],
                            env=dict(os.environ, KUBECONFIG=kc, PEON_API_KEY=key),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/orchestrator",
                                         headers={"X-Api-Key": key})
            urllib.request.urlopen(req, timeout=2).read()
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"peon-api did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.2)


def one_run(browser, port: int, key: str, n: int, idle: float) -> dict:
    context = browser.new_context(viewport={"width": 375, "height": 800})
    context.add_init_script(f"localStorage.setItem('peon-key', {json.dumps(key)})")
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})
    got = {"bytes": 0, "requests": 0}
    cdp.on("Network.loadingFinished", lambda e: got.update(bytes=got["bytes"] + e["encodedDataLength"],
                                                           requests=got["requests"] + 1))
    t0 = time.perf_counter()
    page.goto(f"http://127.0.0.1:{port}/")
    in_page = page.wait_for_function(
        f"() => document.querySelectorAll('#servers li').length === {n} && performance.now()",
        polling="raf", timeout=30_000).json_value()
    wall = time.perf_counter() - t0
    # The list is up: every card holds its server's state (not only the template).
    assert page.locator("#servers li .state").first.inner_text() == "Running"
    first = dict(got)
    page.wait_for_timeout(1000)  # anything the load still finished
    # Idle polls are 304s without a body, for which Chrome reports no loadingFinished: they
    # are counted from Playwright's sizes of each request and its answer (headers, both ways).
    polls: list = []
    page.on("requestfinished", lambda r: polls.append(r) if "/page/servers" in r.url else None)
    page.wait_for_timeout(idle * 1000)
    sizes = [r.sizes() for r in polls]
    statuses = [r.response().status for r in polls]
    idle_bytes = sum(z["requestHeadersSize"] + z["requestBodySize"] + z["responseHeadersSize"]
                     + z["responseBodySize"] for z in sizes)
    idle_requests = len(polls)
    assert all(st == 304 for st in statuses), statuses
    context.close()
    return {"ms_in_page": in_page, "ms_wall": wall * 1000, "bytes": first["bytes"],
            "requests": first["requests"], "idle_bytes": idle_bytes, "idle_requests": idle_requests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=float, default=15, help="seconds the page stays open idle")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright
    kc = kubeconfig()
    kube = K(client_for(kc))
    ns = f"bench-page-{secrets.token_hex(3)}"
    key = secrets.token_urlsafe(24)
    log = pathlib.Path(f"/tmp/{ns}-api.log")
    setup(kube, kc, ns, args.servers)
    proc, port = start_api(kc, ns, key, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            print(f"chromium {browser.version}, {args.servers} servers, {args.runs} runs, "
                  f"fresh context each (nothing cached)")
            rows = [one_run(browser, port, key, args.servers, args.idle) for _ in range(args.runs)]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
        kube.delete("Namespace", None, ns)
    print("\n| run | bytes to the list | requests | ms to the list (page) | ms (wall) | idle bytes "
          f"in {args.idle:g} s | idle polls |")
    print("|----:|------------------:|---------:|----------------------:|----------:|"
          "---------------:|-----------:|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['bytes']:,} | {r['requests']} | {r['ms_in_page']:.0f} | {r['ms_wall']:.0f} "
              f"| {r['idle_bytes']:,} | {r['idle_requests']} |")
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    worst = lambda k: max(r[k] for r in rows)  # noqa: E731
    polls = sum(r["idle_requests"] for r in rows)
    per_poll = sum(r["idle_bytes"] for r in rows) / polls if polls else 0
    print(f"\nbytes to the list: median {med('bytes'):,.0f}, most {worst('bytes'):,} (target at most "
          f"100,000: {'met' if worst('bytes') <= 100_000 else 'NOT met'})")
    print(f"time to the list: median {med('ms_in_page'):.0f} ms, slowest {worst('ms_in_page'):.0f} ms "
          f"in the page, {worst('ms_wall'):.0f} ms wall (target at most 1,000: "
          f"{'met' if worst('ms_wall') <= 1000 else 'NOT met'})")
    print(f"staying open: {per_poll:,.0f} bytes per idle poll, both ways ({polls} polls in "
          f"{args.runs} x {args.idle:g} s, every one a 304)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
