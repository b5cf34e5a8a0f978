"""`kubectl peon` as a user types it: the `kubectl-peon` console script in a subprocess, through
kubectl's plugin lookup where it matters, against the session's operator. Its verbs write
annotations only: a GameServer's spec and generation never change. (Servers here run on kwok
nodes, which have no kubelet: `logs` cannot work on this bed and is tested in unit tests.)"""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import subprocess
import sys

import pytest

from gs_helpers import apply_as_user, gameserver, run_phase, wait_phase
from kube_helpers import wait_for

pytestmark = pytest.mark.usefixtures("operator")

BIN = pathlib.Path(sys.executable).parent
PLUGIN = BIN / "kubectl-peon"


@pytest.fixture
def peon(kubeconfig, clock):
    """Runs `kubectl-peon ARGS...`. It shares the operator's clock (PEON_CLOCK_FILE), as the
    operator and a user's machine share real time, so a stop asked for 'now' is now for both."""
    env = dict(os.environ, KUBECONFIG=kubeconfig, PEON_CLOCK_FILE=str(clock.path))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(PLUGIN), *args], capture_output=True, text=True, env=env,
                              timeout=300)
    return run


def spec_and_generation(kube, ns, name):
    g = kube.get("GameServer", ns, name)
    return g["metadata"]["generation"], g["spec"]


def uptime_reason(kube, ns, name, reason):
    def reached():
        up = kube.status_of("GameServer", ns, name).get("uptime") or {}
        return up if up.get("reason") == reason else f"uptime {up}"
    return wait_for(f"{ns}/{name}'s uptime reason to be {reason}", reached)


def events_part(status_out: str) -> str:
    return status_out.split("\nEvents:", 1)[1]


def test_kubectl_finds_the_plugin_and_ls_shows_a_server(kube, namespace, kubeconfig, kubectl_bin):
    apply_as_user(kube, gameserver("vikings", namespace))
    wait_phase(kube, namespace, "vikings", "Running")
    wait_for("an address", lambda: kube.status_of("GameServer", namespace, "vikings").get("endpoint")
             and kube.status_of("GameServer", namespace, "vikings"))
    env = dict(os.environ, KUBECONFIG=kubeconfig, PATH=f"{BIN}:{os.environ['PATH']}")
    out = subprocess.run([kubectl_bin, "peon", "ls", "-n", namespace], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "GAME", "STATE", "PHASE", "ADDRESS", "PLAYERS", "WHY",
                              "LAST-BACKUP", "AGE"]
    assert len(rows) == 1
    row = rows[0].split()
    endpoint = kube.status_of("GameServer", namespace, "vikings")["endpoint"]
    assert row[:5] == ["vikings", "valheim", "Running", "Running", endpoint]
    assert row[6] == "AlwaysOn" and row[7] == "<none>"

    out = subprocess.run([kubectl_bin, "peon", "ls", "-A", "-o", "json"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    names = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in json.loads(out.stdout)["items"]}
    assert (namespace, "vikings") in names


def test_stop_then_start_change_only_annotations(kube, namespace, clock, peon):
    apply_as_user(kube, gameserver("vikings", namespace))
    wait_phase(kube, namespace, "vikings", "Running")
    before = spec_and_generation(kube, namespace, "vikings")

    out = peon("stop", "vikings", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "gameserver/vikings stop requested (now)\n"
    uptime_reason(kube, namespace, "vikings", "StopRequested")
    wait_phase(kube, namespace, "vikings", "Stopped")
    assert spec_and_generation(kube, namespace, "vikings") == before

    clock.advance(minutes=1)  # a start comes after the stop it cancels (times are whole seconds)
    out = peon("start", "vikings", "--for", "5h", "-n", namespace)
    assert out.returncode == 0, out.stderr
    until = (clock.now() + dt.timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert out.stdout == f"gameserver/vikings start requested (until {until})\n"
    up = uptime_reason(kube, namespace, "vikings", "AlwaysOn")
    assert up["running"] is True and "until the stop asked for" in up["message"]
    wait_phase(kube, namespace, "vikings", "Running")
    assert spec_and_generation(kube, namespace, "vikings") == before

    g = kube.get("GameServer", namespace, "vikings")
    assert g["metadata"]["annotations"]["peon.dev/sleep"] == until
    # Everything kubectl-peon ever wrote on it is metadata.
    mine = [m for m in g["metadata"]["managedFields"] if m["manager"] == "kubectl-peon"]
    assert mine and all(set(m["fieldsV1"]) == {"f:metadata"} for m in mine)

    out = peon("status", "vikings", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert "Why:           AlwaysOn: no uptime policy, until the stop asked for" in out.stdout
    events = events_part(out.stdout)
    # Each said once. (Events carry whole seconds: two in one second have no order to check.)
    assert events.count("AutoStop") == 1 and events.count("AutoStart") == 1


def test_a_start_cannot_beat_spec_state_stopped(kube, namespace, peon):
    apply_as_user(kube, gameserver("off", namespace, state="Stopped"))
    wait_phase(kube, namespace, "off", "Stopped")
    before = kube.get("GameServer", namespace, "off")["metadata"]
    out = peon("start", "off", "-n", namespace)
    assert out.returncode == 1
    assert out.stderr.startswith("error: gameserver/off has spec.state: Stopped, which wins")
    after = kube.get("GameServer", namespace, "off")["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]  # nothing written


def test_restart_sets_restarted_at(kube, namespace, peon):
    apply_as_user(kube, gameserver("vikings", namespace))
    wait_phase(kube, namespace, "vikings", "Running")
    before = spec_and_generation(kube, namespace, "vikings")
    out = peon("restart", "vikings", "-n", namespace)
    assert out.returncode == 0 and out.stdout == "gameserver/vikings restart requested\n", out.stderr
    asked = kube.get("GameServer", namespace, "vikings")["metadata"]["annotations"]["peon.dev/restartedAt"]
    wait_for("the pod template to carry it", lambda: (
        kube.get("Deployment", namespace, "vikings")["spec"]["template"]["metadata"]
        .get("annotations", {}).get("peon.dev/restartedAt") == asked))
    assert spec_and_generation(kube, namespace, "vikings") == before


def test_backup_waits_for_success_and_backups_lists_it(kube, namespace, peon):
    apply_as_user(kube, gameserver("vikings", namespace))
    wait_phase(kube, namespace, "vikings", "Running")
    before = spec_and_generation(kube, namespace, "vikings")
    out = peon("backup", "vikings", "--wait", "--timeout", "120", "-n", namespace)
    assert out.returncode == 0, out.stderr
    created, done = out.stdout.splitlines()
    name = created.removeprefix("gameserverbackup/").removesuffix(" created")
    assert done.startswith(f"gameserverbackup/{name} succeeded")
    assert run_phase(kube, "GameServerBackup", namespace, name, "Succeeded")

    out = peon("backups", "vikings", "-n", namespace)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "SERVER", "REASON", "PHASE", "SIZE", "AGE"]
    assert [r.split()[:4] for r in rows] == [[name, "vikings", "Manual", "Succeeded"]]

    out = peon("ls", "vikings", "-n", namespace)
    assert out.returncode == 0 and out.stdout.splitlines()[1].split()[7] != "<none>", out.stdout

    out = peon("status", "vikings", "-n", namespace)
    assert out.returncode == 0, out.stderr
    conditions = out.stdout.split("\nConditions:", 1)[1].split("\nEvents:", 1)[0]
    assert conditions.splitlines()[1].split() == ["TYPE", "STATUS", "REASON", "MESSAGE"]
    assert {line.split()[0] for line in conditions.splitlines()[2:]} >= {"Valid", "Ready"}
    events = events_part(out.stdout)
    assert events.splitlines()[1].split() == ["TYPE", "REASON", "AGE", "MESSAGE"]
    assert "BackupSucceeded" in events
    assert spec_and_generation(kube, namespace, "vikings") == before


@pytest.mark.parametrize("argv", [
    ("start",), ("stop", "vikings", "--in", "5m", "--at", "1796000400"), ("ls", "-o", "table"),
    ("start", "vikings", "--for", "forever"), ("nosuch",)])
def test_bad_usage_exits_2(namespace, peon, argv):
    out = peon(*argv, "-n", namespace)
    assert out.returncode == 2 and "error:" in out.stderr and out.stdout == ""


def test_an_unknown_server_exits_1(namespace, crds, peon):
    for argv in (("status", "nope"), ("stop", "nope"), ("backup", "nope", "--wait")):
        out = peon(*argv, "-n", namespace)
        assert out.returncode == 1, (argv, out.stdout, out.stderr)
        assert out.stderr == f'error: gameserver "nope" not found in namespace "{namespace}"\n'
