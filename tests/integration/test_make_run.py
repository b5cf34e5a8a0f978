"""`make run` as a newcomer runs it: tools/run (the Makefile's run target, after its
dependencies) against the bed the suite uses. On the real node the test game answers at the
printed address with its real protocol (Steam A2S, and the game port's datagrams); the printed
page answers with the printed admin key; the printed next steps work exactly as typed. Where the
machine cannot run the real node, the kwok bed with its reason, said once.

The run gets a namespace and a port of its own and is stopped as Ctrl-C stops it; the bed stays
as it was (tools/run reuses a running bed and real node), so the test runs again on the same bed."""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from api_helpers import free_port
from kube_helpers import wait_for
from realnode_helpers import udp

ROOT = pathlib.Path(__file__).resolve().parents[2]
# A fresh machine builds the images here (debootstrap, three builds): minutes, once.
pytestmark = pytest.mark.timeout(900)
PRINTED = "Ctrl-C stops the operator and peon-api"


@pytest.fixture
def make_run(kubeconfig, kube, tmp_path):
    if os.environ.get("KUBECONFIG"):
        pytest.skip("make run uses the local bed (tools/cluster), not the cluster KUBECONFIG names")
    ns, port = f"run-{uuid.uuid4().hex[:8]}", free_port()
    out = tmp_path / "make-run.out"
    env = {**os.environ, "PEON_RUN_NAMESPACE": ns, "PEON_RUN_PORT": str(port)}
    t0 = time.monotonic()
    proc = subprocess.Popen([str(ROOT / "tools" / "run")], cwd=ROOT, env=env, stdout=open(out, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def printed():
            text = out.read_text(errors="replace")
            if proc.poll() is not None:
                raise AssertionError(f"tools/run ended ({proc.returncode}):\n{text[-3000:]}")
            return (text,) if PRINTED in text else None  # (a bare string is a reason to wait)
        text, = wait_for("tools/run to print its addresses", printed, 840, interval=0.5)
        print(f"\ntools/run printed its addresses after {time.monotonic() - t0:.1f}s")
        yield ns, text
        assert proc.poll() is None, "tools/run stopped by itself:\n" + out.read_text()[-3000:]
    finally:
        # The namespace goes while the run's operator still runs: it releases the backups'
        # finalizers (their archives go with them).
        kube.delete("Namespace", None, ns)
        try:
            wait_for(f"namespace {ns} gone", lambda: kube.get("Namespace", None, ns) is None, 180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # as Ctrl-C: tools/run stops what it started
                proc.wait(30)
    # Its operator and peon-api went with it.
    left = subprocess.run(["pgrep", "-f", "--", f"--namespace {ns}"], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout


def get(url: str, key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(1 << 20)
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 16)


def test_make_run_shows_the_page_the_game_answering_and_next_steps_that_work(make_run, kube):
    ns, text = make_run
    real = "run: the real node real-node-0 runs the test game as the example server" in text
    if not real:  # the kwok bed: its reason, said once
        said = [line for line in text.splitlines() if line.startswith("run: the kwok bed, no real node: ")]
        assert len(said) == 1 and len(said[0]) > len("run: the kwok bed, no real node: ") + 5, text
    name = "demo" if real else "vikings"

    # The page, with the printed admin key.
    m = re.search(r"^The page:  (http://127\.0\.0\.1:\d+/)   admin key: (\S+)$", text, re.M)
    assert m, text
    page, key = m.groups()
    status, html = get(page)
    assert status == 200 and b"<html" in html.lower()
    assert get(page + "page/servers", "not-" + key)[0] == 401
    status, body = get(page + "page/servers", key)
    assert status == 200, body
    cards = json.loads(body)
    assert [c["name"] for c in cards["servers"]] == [name], cards
    status, body = get(page + "api/v1/servers", key)
    assert status == 200, body

    # The next steps, exactly as printed, in a shell of their own.
    steps = text.split("Next steps, in another terminal:\n", 1)[1].splitlines()
    source = steps[0].split("#", 1)[0].strip()
    assert source.startswith("source /"), steps
    for step in (steps[1], steps[2]):  # kubectl peon ls, kubectl peon status
        assert step.startswith("  kubectl peon "), steps
        done = subprocess.run(["bash", "-c", f"{source} && {step.strip()}"], capture_output=True,
                              text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                          if k not in ("KUBECONFIG",)})
        assert done.returncode == 0, (step, done.stderr)
        assert name in done.stdout and "Running" in done.stdout, (step, done.stdout)

    if real:
        g = kube.get("GameServer", ns, name)
        # The game, at the printed addresses, with its real protocol.
        m = re.search(r"^The game:  ([\d.]+):(\d+) \(UDP\), answering A2S at ([\d.]+):(\d+): 'Peon demo'",
                      text, re.M)
        assert m, text
        host, port, qhost, qport = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        assert f"{host}:{port}" == g["status"]["endpoint"]
        assert udp(host, port, "PING").startswith("PONG 1.0 ")
        import a2s
        info = a2s.info((qhost, qport), timeout=2)
        assert info.server_name == "Peon demo" and info.player_count == 0
        # The page shows the same address to copy.
        card = json.loads(get(page + "page/servers", key)[1])["servers"][0]
        assert card["address"] == f"{host}:{port}" and card["title"] == "Peon demo", card

    # The other steps, as printed, in order (a backup that must succeed, logs, stop, start).
    rest = [line.strip() for line in steps[3:] if line.startswith("  kubectl ")]
    assert len(rest) == (4 if real else 2), steps
    done = subprocess.run(["bash", "-c", " && ".join([source, *rest])], capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"})
    assert done.returncode == 0, (rest, done.stdout[-2000:], done.stderr[-2000:])
    runs = kube.list("GameServerBackup", ns)
    assert [b["status"]["phase"] for b in runs] == (["Succeeded"] if real else []), runs
    if not real:
        pytest.skip("the kwok bed: no game answers (" + text.split("no real node: ", 1)[1].splitlines()[0] + ")")
