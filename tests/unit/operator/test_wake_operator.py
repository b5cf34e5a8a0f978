"""The operator's side of the wake gate (operator/wake.py): a sleeping server's Service and its
slice to the gate, status.gate, and a knock becoming the API's start; through the reconcile
with the in-memory API (fake_kube.FakeKube)."""
import datetime as dt

import pytest

from fake_kube import FakeKube
from fixtures import game, gameserver

from peon import ANNOTATION_WAKE
from peon.operator import wake
from peon.operator.controller import Controller
from peon.shared import clock
from peon.shared.model import parse_game, parse_gameserver

KEY = ("GameServer", "games", "odin")


def ready_gate_pod(ip="10.88.0.9"):
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "peon-gate-0", "namespace": "peon",
                         "labels": {"app.kubernetes.io/component": "wake-gate"}},
            "spec": {"nodeName": "node-a"},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.fixture
def world(monkeypatch):
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    c.wake.config = wake.Config(namespace="peon", port_min=20000, port_max=20009)
    kube.objects[("Pod", "peon", "peon-gate-0")] = ready_gate_pod()
    c.wake.poll()
    c.cache.put(c.cache.games, "valheim", game(), False)
    gs = gameserver(state="Stopped")
    kube.objects[KEY] = gs
    c.cache.put(c.cache.gameservers, KEY[1:], gs, False)
    return kube, c


def refresh(kube, c):
    c.cache.put(c.cache.gameservers, KEY[1:], kube.objects[KEY], False)


def test_a_sleeping_server_is_at_the_gate_with_its_address_kept(world):
    kube, c = world
    c.reconcile(KEY)
    svc = kube.objects[("Service", "games", "odin")]
    assert "selector" not in svc["spec"]                      # no game pod to select
    assert [p["port"] for p in svc["spec"]["ports"]] == [2456, 2457, 2458]  # the same ports
    eps = kube.objects[("EndpointSlice", "games", "odin-gate")]
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "odin"
    assert eps["endpoints"][0]["addresses"] == ["10.88.0.9"]
    # named, so a Service with externalTrafficPolicy Local serves the gate on its node's port
    assert eps["endpoints"][0]["nodeName"] == "node-a"
    label_value = __import__("re").compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    assert all(label_value.match(v) and len(v) <= 63 for v in eps["metadata"]["labels"].values())
    gate = kube.objects[KEY]["status"]["gate"]
    assert gate["serving"] is True
    by_name = {p["name"]: p for p in gate["ports"]}
    assert {p["name"]: p["port"] for p in eps["ports"]} == \
        {n: p["gatePort"] for n, p in by_name.items()}
    assert len({p["gatePort"] for p in gate["ports"]}) == 2  # game and query; crossplay not served
    assert by_name[game()["spec"]["query"]["port"]]["role"] == "query"
    assert gate["view"]["name"] == "Friends of Odin"
    assert gate["view"]["wake_on_connect"] is False  # spec.state Stopped: answered, never woken


def test_nothing_is_written_again_when_nothing_changed(world):
    kube, c = world
    c.reconcile(KEY)
    refresh(kube, c)
    n = len(kube.writes())
    c.reconcile(KEY)
    assert kube.writes()[n:] == []


def test_without_a_ready_gate_pod_the_service_keeps_its_selector(world):
    kube, c = world
    del kube.objects[("Pod", "peon", "peon-gate-0")]
    c.wake.poll()
    c.reconcile(KEY)
    assert kube.objects[("Service", "games", "odin")]["spec"]["selector"]
    assert ("EndpointSlice", "games", "odin-gate") not in kube.objects


def test_the_wake_switch_off_keeps_the_server_off_the_gate(world):
    kube, c = world
    kube.objects[KEY]["spec"]["wakeOnConnect"] = {"enabled": False}
    refresh(kube, c)
    c.reconcile(KEY)
    assert kube.objects[("Service", "games", "odin")]["spec"]["selector"]
    assert ("EndpointSlice", "games", "odin-gate") not in kube.objects


def knock(kube, c, at, **k):
    kube.objects[KEY].setdefault("status", {})["knock"] = {
        "at": at, "address": "10.88.0.1", "how": "datagram", **k}
    refresh(kube, c)


def test_a_knock_is_the_apis_start_and_is_told_once(world, monkeypatch):
    import peon.operator.controller as ctl
    kube, c = world
    kube.objects[KEY]["spec"]["state"] = "Running"
    kube.objects[KEY]["spec"]["uptime"] = {"session": {"maxDuration": "2h"}}
    kube.objects[KEY]["metadata"]["annotations"] = {"peon.dev/sleep": "2020-01-01T00:00:00Z"}
    refresh(kube, c)
    c.reconcile(KEY)  # stopped by the stop asked for: at the gate
    refresh(kube, c)
    assert kube.objects[KEY]["status"]["gate"]["serving"] is True
    spec_before = dict(kube.objects[KEY]["spec"])
    knock(kube, c, clock.iso(clock.now()), player=None)
    c.reconcile(KEY)
    obj = kube.objects[KEY]
    assert obj["spec"] == spec_before                              # never a spec write
    assert clock.parse(obj["metadata"]["annotations"][ANNOTATION_WAKE]) is not None
    assert obj["status"]["lastKnock"]["outcome"] == "woke"
    assert kube.objects[("Deployment", "games", "odin")]["spec"]["replicas"] == 1
    woke = [e for e in kube.events if e[1] == "WokenByKnock"]
    assert len(woke) == 1 and "10.88.0.1" in woke[0][2]
    # no pod ready yet: still at the gate while it boots
    assert obj["status"]["gate"]["serving"] is True
    later = ctl.time.monotonic() + 5  # past the settle of the phase on its way
    monkeypatch.setattr(ctl.time, "monotonic", lambda: later)
    refresh(kube, c)
    c.reconcile(KEY)
    up = kube.objects[KEY]["status"]["uptime"]
    assert up["running"] is True and up["reason"] == "WokenUp"
    assert clock.parse(up["nextChange"]) > clock.now() + dt.timedelta(hours=1)  # session timer
    assert len([e for e in kube.events if e[1] == "WokenByKnock"]) == 1  # handled once


def test_outside_a_window_a_knock_wakes_nothing_and_says_when(world):
    kube, c = world
    now = clock.now()
    start = (now + dt.timedelta(hours=2)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=3)).strftime("%H:%M")
    kube.objects[KEY]["spec"]["state"] = "Running"
    kube.objects[KEY]["spec"]["uptime"] = {"windows": [{"start": start, "end": end}]}
    refresh(kube, c)
    c.reconcile(KEY)
    refresh(kube, c)
    view = kube.objects[KEY]["status"]["gate"]["view"]
    assert view["window_open"] is False and view["opens_at"]
    knock(kube, c, clock.iso(now))
    c.reconcile(KEY)
    obj = kube.objects[KEY]
    assert ANNOTATION_WAKE not in (obj["metadata"].get("annotations") or {})
    assert obj["status"]["lastKnock"]["outcome"].startswith("outside its hours (opens ")
    assert [e[1] for e in kube.events if "knocked" in e[2]] == ["KnockIgnored"]


def test_the_minecraft_allow_list_decides_by_name():
    switch = wake.switch_of({"wakeOnConnect": {"minecraftAllow": ["Steve"]}})
    k = {"address": "a", "how": "login"}
    assert wake.decide({**k, "player": "steve"}, switch, True, None, False) == (True, "woke")
    assert wake.decide({**k, "player": "Alex"}, switch, True, None, False)[1] == "not allowed"
    assert wake.decide({**k, "player": None}, switch, True, None, False)[1] == "not allowed"
    assert wake.switch_of({}) == wake.Switch(True, None)  # the default: on, anyone


def test_a_knock_from_the_gate_is_bounded_and_an_old_one_is_not_handled_again():
    long = {"knock": {"at": "2026-01-01T00:00:00Z", "address": "x" * 500, "player": "p" * 99}}
    k = wake.pending_knock(long)
    assert len(k["address"]) == 64 and len(k["player"]) == 16
    assert wake.pending_knock({**long, "lastKnock": {"at": "2026-01-01T00:00:00Z"}}) is None
    assert wake.pending_knock({"knock": {"at": "not a time"}}) is None
    assert wake.pending_knock({"knock": "garbage"}) is None


def test_gate_ports_are_distinct_stable_and_freed(world):
    _, c = world
    a = c.wake.allocate(("n", "a"), ["game", "query"])
    b = c.wake.allocate(("n", "b"), ["game"])
    assert set(a.values()).isdisjoint(b.values())
    assert c.wake.allocate(("n", "a"), ["game", "query"]) == a
    c.wake.release(("n", "a"))
    assert set(c.wake.allocate(("n", "c"), ["game", "query"]).values()) == set(a.values())


def test_the_service_without_selector_keeps_its_node_ports():
    gs = parse_gameserver(gameserver(network={"type": "NodePort", "nodePorts": {"game": 30456}}))
    from peon.shared.render import service
    svc = service(gs, parse_game(game()))
    out = wake.without_selector(svc)
    assert "selector" not in out["spec"] and out["spec"]["ports"] == svc["spec"]["ports"]
    assert "selector" in svc["spec"]  # the rendered one is left as it was


def test_back_at_the_game_the_selector_returns_and_the_slice_goes(world, monkeypatch):
    import peon.operator.controller as ctl
    kube, c = world
    c.reconcile(KEY)
    refresh(kube, c)
    kube.objects[KEY]["spec"]["state"] = "Running"
    refresh(kube, c)
    pod = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": "odin-1", "namespace": "games",
                        "labels": {"peon.dev/gameserver": "odin"}},
           "spec": {"nodeName": "n"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    c.cache.put(c.cache.pods, ("games", "odin-1"), pod, False)
    c.reconcile(KEY)
    assert kube.objects[("Service", "games", "odin")]["spec"]["selector"] == \
        {"peon.dev/gameserver": "odin"}
    assert ("EndpointSlice", "games", "odin-gate") not in kube.objects
    later = ctl.time.monotonic() + 5  # past the settle of the phase on its way
    monkeypatch.setattr(ctl.time, "monotonic", lambda: later)
    refresh(kube, c)
    c.reconcile(KEY)
    assert kube.objects[KEY]["status"]["gate"] == {"serving": False}


def plan(name):
    return {p["name"]: (p["role"], p["speaks"]) for p in wake.port_plan(parse_game(game(name)))}


def test_the_catalogue_says_how_clients_connect():
    # Minecraft: the login on the game port; RCON is not served, so it wakes nothing.
    assert plan("minecraft") == {"game": ("game", "minecraft")}
    # Quake 3: queries and joins on one UDP port.
    assert plan("quake3") == {"game": ("game", "quake3")}
    # Valheim: A2S on the query port, joins on the game port, crossplay not served.
    assert plan("valheim") == {"query": ("query", "a2s"), "game": ("game", "a2s")}
    # A Game without it: the generic rule, every port but the query port.
    g = game("terraria")
    g["spec"].pop("connect", None)
    assert {p["speaks"] for p in wake.port_plan(parse_game(g))} == {"generic-tcp"}


def test_a_connect_that_names_no_port_or_the_wrong_transport_is_refused():
    from peon.shared.model import InvalidSpec
    g = game("minecraft")
    g["spec"]["connect"] = {"port": "nope", "protocol": "minecraft"}
    with pytest.raises(InvalidSpec, match="connect"):
        parse_game(g)
    g["spec"]["connect"] = {"port": "game", "protocol": "quake3"}  # quake3 over TCP
    with pytest.raises(InvalidSpec, match="spoken over UDP"):
        parse_game(g)


def test_the_up_notification_says_who_woke_it():
    from peon.shared import notify as nt
    status = {"phase": "Running", "uptime": {"reason": "WokenUp",
                                             "sessionStart": "2026-12-07T12:00:03Z"},
              "lastKnock": {"at": "2026-12-07T12:00:01Z", "outcome": "woke",
                            "address": "192.0.2.7", "player": "Steve"}}
    up, = nt.messages("odin", {"phase": "Stopped"}, status)
    assert ("Woken by", "Steve") in up.fields
    status["lastKnock"]["player"] = None
    assert ("Woken by", "192.0.2.7") in nt.messages("odin", {}, status)[0].fields
    status["uptime"]["reason"] = "InWindow"  # started by its window, not the knock
    assert all(k != "Woken by" for k, _ in nt.messages("odin", {}, status)[0].fields)


def test_the_view_is_the_servers_last_answer_and_its_spec_when_never_seen():
    gs, g = parse_gameserver(gameserver()), parse_game(game())
    never = wake.view_of(gs, g, {}, wake.Switch(), clock.now())
    assert never["name"] == "Friends of Odin" and "map" not in never
    seen = wake.view_of(gs, g, {"players": {"online": 0, "max": 10, "name": "Odin's Hall",
                                            "map": "Meadows", "version": "0.218"}},
                        wake.Switch(), clock.now())
    assert (seen["name"], seen["map"], seen["version"], seen["max_players"]) == \
        ("Odin's Hall", "Meadows", "0.218", 10)
    assert seen["game"] == never["game"]  # never said: the Game's title
    said = wake.view_of(gs, g, {"players": {"online": 0, "max": 8, "game": "Quake3Arena"}},
                        wake.Switch(), clock.now())
    assert said["game"] == "Quake3Arena"  # a Quake 3 browser drops another gamename


def test_the_prober_keeps_what_a2s_and_minecraft_servers_call_themselves():
    import json
    import struct
    from peon.shared import players
    info = (b"I\x11" + b"Odin's Hall\x00Meadows\x00valheim\x00Valheim\x00" + struct.pack("<H", 0)
            + bytes([3, 10, 0, ord("d"), ord("l"), 0, 1]) + b"0.218.21\x00")
    p = players.parse_info(info)
    assert (p.online, p.max, p.name, p.map, p.version) == (3, 10, "Odin's Hall", "Meadows",
                                                           "0.218.21")
    assert p.game == "Valheim"
    status = json.dumps({"version": {"name": "1.21.1", "protocol": 767},
                         "players": {"online": 1, "max": 20},
                         "description": {"text": "Blocky\x07" + "x" * 500}}).encode()
    m = players.parse_status(b"\x00" + players.varint(len(status)) + status)
    assert (m.version, m.protocol, m.online) == ("1.21.1", 767, 1)
    assert m.name.startswith("Blocky") and "\x07" not in m.name and len(m.name.encode()) <= 120
    assert players.Players(1, 20) == m  # a new name is no news: only the counts are compared
