"""A real game server nobody here wrote, on the bed's real node (issue 25, items 6 and 7):
OpenArena's dedicated server from Debian's package (`tools/images openarena`, the Game in
tests/realnode/openarena), run by the operator as users run it and asked through its Service
(cluster IP, kube-proxy) in the Quake 3 protocol, as a player's server browser asks it."""
from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import time

import pytest

from conftest import fresh_namespace
from gs_helpers import wait_event, wait_phase
from kube_helpers import wait_for
from realnode_helpers import ON_REAL_NODE, ROOT, server_pod, service_address, volume_dir
from test_wake import game_pods, gate, gate_aware_operator, send  # noqa: F401 (the gate fixture)

pytestmark = pytest.mark.timeout(900)
GAME = "peon-openarena"
GAME_FILE = ROOT / "tests" / "realnode" / "openarena" / "game.yaml"
M = b"\xff\xff\xff\xff"


@pytest.fixture(scope="session")
def openarena(real_node, kubectl, crds):  # noqa: F811
    """The image built (cached after the first build) and imported into the node; the Game."""
    t0 = time.monotonic()
    built = subprocess.run([str(ROOT / "tools" / "images"), "openarena"], capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    print(f"\nopenarena image built and imported in {time.monotonic() - t0:.1f}s "
          f"({built.stderr.strip().splitlines()[-1] if built.stderr.strip() else ''})")
    kubectl("apply", "--server-side", "-f", str(GAME_FILE))
    return GAME


def oa_server(name: str, ns: str, server_name: str, **env) -> dict:
    spec = {"gameUid": GAME, "serverName": server_name, "scheduling": ON_REAL_NODE,
            # the prober asks while an idle stop or a held change needs the count
            "uptime": {"idle": {"after": "30m", "grace": "0m", "probeIntervalSeconds": 5}}}
    if env:
        spec["settings"] = [{"type": "env", "name": "env", "content": env}]
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ask(address: tuple[str, int], command: str, timeout: float = 1.0):
    """One query as a Quake 3 browser sends it: (info string's pairs, the lines after), or None."""
    challenge = secrets.token_hex(4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(M + f"{command} {challenge}".encode(), address)
            data = s.recv(65535)
        except OSError:
            return None
    head = M + (b"statusResponse\n" if command == "getstatus" else b"infoResponse\n")
    assert data.startswith(head), data[:100]
    info, *lines = data[len(head):].decode("latin-1").split("\n")
    fields = info.split("\\")[1:]
    pairs = dict(zip(fields[::2], fields[1::2]))
    assert pairs["challenge"] == challenge
    return pairs, [line for line in lines if line]


def getstatus(address, timeout: float = 1.0) -> tuple[dict, list[str]] | None:
    """(serverinfo, player lines), or None."""
    return ask(address, "getstatus", timeout)


def answered(address, timeout=90):
    return wait_for(f"a getstatus answer from {address}", lambda: getstatus(address), timeout,
                    interval=0.5)


def players_status(kube, ns, name) -> dict:
    return kube.status_of("GameServer", ns, name).get("players") or {}


def test_openarena_answers_getstatus_at_its_service_and_the_prober_counts_its_players(
        kube, kubectl, oans, openarena, oa_wake_operator):  # noqa: F811
    t0 = time.monotonic()
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
        oa_server("frag", oans, "Frag Night")))
    wait_phase(kube, oans, "frag", "Running", timeout=180)
    address = service_address(kube, oans, "frag")
    assert address[1] == 27960
    info, players = answered(address)
    print(f"\napply to OpenArena answering getstatus at its Service: {time.monotonic() - t0:.1f}s")
    print(f"getstatus: {info} {players}")
    # Debian's server, as configured by the Game: its hostname is the serverName.
    assert info["sv_hostname"] == "Frag Night"
    assert info["mapname"] == "oa_dm1" and info["sv_maxclients"] == "8"
    assert info["version"].startswith("ioq3"), info
    assert players == []
    # The protocol number is getinfo's (OpenArena's 71: ioquake3's legacy protocol number).
    about, _ = ask(address, "getinfo")
    print(f"getinfo: {about}")
    assert about["protocol"] == "71" and about["hostname"] == "Frag Night", about
    # The prober asks the same Service: status.players is the server's own answer.
    st = wait_for("status.players from the prober", lambda: (
        p := players_status(kube, oans, "frag")) and p.get("name") == "Frag Night" and p, 60)
    assert (st["online"], st["max"], st["map"], st["protocol"]) == (0, 8, "oa_dm1", 71)
    assert st["version"] == info["version"]
    assert st["game"] == about["gamename"]  # getinfo's, which a browser compares with its own

    # The game runs as uid 1000 with its home on the world volume, where it writes.
    pod = server_pod(kube, oans, "frag")
    home = volume_dir(kube, oans, "frag-data") / "baseoa"
    cfg = home / "peon-server.cfg"
    assert 'sv_hostname "Frag Night"' in cfg.read_text()
    assert cfg.stat().st_uid == 1000
    # It sends nothing off the machine: no master server is resolved or told of it.
    log = kubectl("-n", oans, "logs", pod["metadata"]["name"], "-c", "server").stdout
    print(f"server log (tail): {log[-1500:]}")
    assert "Opening IP socket: 0.0.0.0:27960" in log, log[-2000:]
    assert not re.search(r"(?i)resolving|heartbeat|master", log), log[-2000:]


def test_bots_on_an_openarena_server_are_counted_as_its_players(
        kube, kubectl, oans, openarena, oa_wake_operator):  # noqa: F811
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
        oa_server("bots", oans, "Bot Night", OA_BOTS="Sarge Grunt")))
    wait_phase(kube, oans, "bots", "Running", timeout=180)
    address = service_address(kube, oans, "bots")
    info, players = wait_for("two bots in getstatus", lambda: (
        a := getstatus(address)) and len(a[1]) == 2 and a, 90, interval=0.5)
    names = sorted(re.fullmatch(r'-?\d+ \d+ "(.*)"', p).group(1) for p in players)
    assert names == ["Grunt", "Sarge"], players
    st = wait_for("2 players in status", lambda: (
        p := players_status(kube, oans, "bots")) and p.get("online") == 2 and p, 60)
    assert st["max"] == 8 and st["name"] == "Bot Night"
    out = kubectl("-n", oans, "get", "pgs", "bots").stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    assert row[header.index("PLAYERS")] == "2"


# --- asleep: the wake gate stands in for it ----------------------------------------------------

@pytest.fixture
def oans(kube):
    """Namespaces of their own (oa-*), watched only by this file's gate-aware operator: the
    session's real-node operator (r-*) keeps running beside it."""
    yield from fresh_namespace(kube, "oa")


@pytest.fixture(scope="module")
def oa_wake_operator(kubeconfig, crds, real_node, tmp_path_factory, rn_clock, gate):  # noqa: F811
    with gate_aware_operator(kubeconfig, tmp_path_factory.mktemp("oa-wake-operator"), "oa-*",
                             rn_clock) as op:
        yield op


def test_asleep_openarena_is_answered_by_the_gate_a_connect_wakes_it_and_the_real_server_answers(
        kube, kubectl, oans, openarena, gate, oa_wake_operator, rn_clock):  # noqa: F811
    ns, name = oans, "sleepy"
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
        oa_server(name, ns, "Sleepy Arena", OA_BOTS="Sarge")))
    wait_phase(kube, ns, name, "Running", timeout=180)
    address = service_address(kube, ns, name)
    svc_before = kube.get("Service", ns, name)
    info, players = wait_for("Sarge in getstatus", lambda: (
        a := getstatus(address)) and len(a[1]) == 1 and a, 90, interval=0.5)
    awake_about, _ = ask(address, "getinfo")
    assert "peon" not in info and info["mapname"] == "oa_dm1"
    # The prober's answer is what the gate will stand in with (name, map, protocol).
    wait_for("status.players", lambda: (p := players_status(kube, ns, name)).get("online") == 1
             and p.get("protocol") == 71, 60)

    # The API's stop: the sleep annotation at the operator's now, no spec write.
    rn_clock.reset()
    kube.merge_patch("GameServer", ns, name, {"metadata": {"annotations": {
        "peon.dev/sleep": rn_clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")}}})
    t0 = time.monotonic()
    wait_for("the server at the gate", lambda: bool((kube.status_of("GameServer", ns, name)
                                                     .get("gate") or {}).get("serving")), 120)
    wait_for("no game pod", lambda: game_pods(kube, ns, name) == [], 60)
    asleep, nobody = wait_for("the gate's getstatus at the same address", lambda: (
        a := getstatus(address)) and "peon" in a[0] and a, 60, interval=0.5)
    print(f"\nstop to the gate answering getstatus: {time.monotonic() - t0:.1f}s; {asleep}")
    assert kube.get("Service", ns, name)["spec"]["clusterIP"] == svc_before["spec"]["clusterIP"]
    assert asleep["sv_hostname"] == "Sleepy Arena" and nobody == []
    assert asleep["mapname"].startswith("oa_dm1") and "join to wake" in asleep["mapname"]
    assert asleep["sv_maxclients"] == "8"
    about, _ = ask(address, "getinfo")
    assert about["protocol"] == "71" and about["hostname"] == "Sleepy Arena", about
    # the gamename the real server gave (a browser drops a server whose gamename differs)
    assert about["gamename"] == awake_about["gamename"], (about, awake_about)
    # Queries wake nothing (at a browser's pace: the gate answers 10 a second per source).
    for _ in range(10):
        assert getstatus(address) is not None
        time.sleep(0.15)
    time.sleep(3)
    assert "knock" not in kube.status_of("GameServer", ns, name)
    assert game_pods(kube, ns, name) == []

    # A player's connect (the packet that follows getchallenge) wakes it.
    rn_clock.reset()
    t_knock = time.monotonic()
    send(address, M + b'connect "\\protocol\\71\\name\\alice\\qport\\1234"')
    wait_for("the wake annotation", lambda: "peon.dev/wake" in (
        kube.get("GameServer", ns, name)["metadata"].get("annotations") or {}), 30, interval=0.2)
    # After the wake the real server answers at the same address with its real player count.
    real, on = wait_for("OpenArena's own getstatus again", lambda: (
        a := getstatus(address)) and "peon" not in a[0] and len(a[1]) == 1 and a, 180,
        interval=0.5)
    print(f"connect to OpenArena answering again: {time.monotonic() - t_knock:.1f}s")
    assert real["sv_hostname"] == "Sleepy Arena" and real["mapname"] == "oa_dm1"
    assert re.fullmatch(r'-?\d+ \d+ "Sarge"', on[0]), on
    st = kube.status_of("GameServer", ns, name)
    assert st["lastKnock"]["outcome"] == "woke" and st["lastKnock"]["address"]
    wait_event(kube, ns, name, "WokenByKnock")
    wait_for("1 player in status again", lambda: players_status(kube, ns, name).get("online") == 1,
             60)
    assert kube.get("GameServer", ns, name)["spec"].get("state", "Running") == "Running"
