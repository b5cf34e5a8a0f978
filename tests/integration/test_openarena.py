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

from gs_helpers import wait_phase
from kube_helpers import wait_for
from realnode_helpers import ON_REAL_NODE, ROOT, server_pod, service_address, volume_dir
from test_realnode import real_node, rn_clock, rn_operator, rns  # noqa: F401 (fixtures)

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
        kube, kubectl, rns, openarena, rn_operator):  # noqa: F811
    t0 = time.monotonic()
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
        oa_server("frag", rns, "Frag Night")))
    wait_phase(kube, rns, "frag", "Running", timeout=180)
    address = service_address(kube, rns, "frag")
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
        p := players_status(kube, rns, "frag")) and p.get("name") == "Frag Night" and p, 60)
    assert (st["online"], st["max"], st["map"], st["protocol"]) == (0, 8, "oa_dm1", 71)
    assert st["version"] == info["version"]

    # The game runs as uid 1000 with its home on the world volume, where it writes.
    pod = server_pod(kube, rns, "frag")
    home = volume_dir(kube, rns, "frag-data") / "baseoa"
    cfg = home / "peon-server.cfg"
    assert 'sv_hostname "Frag Night"' in cfg.read_text()
    assert cfg.stat().st_uid == 1000
    # It sends nothing off the machine: no master server is resolved or told of it.
    log = kubectl("-n", rns, "logs", pod["metadata"]["name"], "-c", "server").stdout
    print(f"server log (tail): {log[-1500:]}")
    assert "Opening IP socket: 0.0.0.0:27960" in log, log[-2000:]
    assert not re.search(r"(?i)resolving|heartbeat|master", log), log[-2000:]


def test_bots_on_an_openarena_server_are_counted_as_its_players(
        kube, kubectl, rns, openarena, rn_operator):  # noqa: F811
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
        oa_server("bots", rns, "Bot Night", OA_BOTS="Sarge Grunt")))
    wait_phase(kube, rns, "bots", "Running", timeout=180)
    address = service_address(kube, rns, "bots")
    info, players = wait_for("two bots in getstatus", lambda: (
        a := getstatus(address)) and len(a[1]) == 2 and a, 90, interval=0.5)
    names = sorted(re.fullmatch(r'-?\d+ \d+ "(.*)"', p).group(1) for p in players)
    assert names == ["Grunt", "Sarge"], players
    st = wait_for("2 players in status", lambda: (
        p := players_status(kube, rns, "bots")) and p.get("online") == 2 and p, 60)
    assert st["max"] == 8 and st["name"] == "Bot Night"
    out = kubectl("-n", rns, "get", "pgs", "bots").stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    assert row[header.index("PLAYERS")] == "2"
