"""The gate in a cluster (gate/cluster.py): what the operator's status.gate becomes, served on
127.0.0.1 and asked with python-a2s; a knock written back as status.knock only."""
import asyncio
import datetime as dt
import socket

import a2s as pya2s
import pytest

from peon.gate import cluster
from peon.gate.server import Binding, Gate
from peon.gate.view import Knock

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


def status_gate(**view):
    return {"serving": True, "address": "10.88.0.9",
            "ports": [{"name": "game", "port": 2456, "protocol": "UDP", "role": "game",
                       "speaks": "a2s", "gatePort": 20000},
                      {"name": "query", "port": 2457, "protocol": "UDP", "role": "query",
                       "speaks": "a2s", "gatePort": 20001}],
            "view": {"name": "Friends of Odin", "game": "Valheim", "folder": "valheim",
                     "max_players": 10, "port": 2456, "wake_on_connect": True,
                     "window_open": True, "opens_at": None, **view}}


def gs(gate):
    return {"metadata": {"namespace": "games", "name": "odin"}, "status": {"gate": gate}}


def query_only(**view):
    """status.gate with the query port alone, on a port the system picks (gatePort 0)."""
    return {**status_gate(**view), "ports": [{"name": "query", "gatePort": 0, "protocol": "UDP",
                                              "role": "query", "speaks": "a2s"}]}


async def follow(gate, address, *statuses):
    """A follower listening on `address`, given these status.gate events one after another;
    returns once the gate serves the server (or after 2 s)."""
    follower = cluster.Follower(None, gate, ("games",), address=address)
    follower.loop = asyncio.get_running_loop()
    for status in statuses:
        follower._changed(gs(status), False)
        await asyncio.sleep(0.02)
    for _ in range(100):
        if gate.bound("games/odin"):
            break
        await asyncio.sleep(0.02)
    return follower


def test_status_gate_becomes_the_view_and_the_listeners():
    view, bindings = cluster.wanted(gs(status_gate()), NOW)
    assert (view.name, view.game, view.max_players, view.may_wake) == \
        ("Friends of Odin", "Valheim", 10, True)
    assert bindings == [Binding("0.0.0.0", 20000, "udp", "game", "a2s"),
                        Binding("0.0.0.0", 20001, "udp", "query", "a2s")]
    assert cluster.wanted(gs({"serving": False}), NOW) is None
    assert cluster.wanted({"metadata": {"namespace": "g", "name": "x"}}, NOW) is None


def test_outside_its_hours_the_view_says_when_it_opens():
    view, _ = cluster.wanted(gs(status_gate(window_open=False,
                                            opens_at="2026-12-07T18:00:00Z")), NOW)
    assert not view.may_wake and view.mark == "asleep: wakes at 18:00"


def test_an_ill_typed_status_is_bounded_or_refused():
    view, _ = cluster.wanted(gs(status_gate(name="x" * 5000, max_players="lots",
                                            wake_players=["a" * 99] * 1000)), NOW)
    assert len(view.name.encode()) <= 120 and view.max_players == 0
    assert len(view.wake_players) == 1 and len(next(iter(view.wake_players))) == 16
    with pytest.raises(ValueError):
        cluster.wanted(gs({**status_gate(), "ports": [{"gatePort": 1, "protocol": "udp",
                                                       "role": "game", "speaks": "nonsense"}]}),
                       NOW)


def test_the_follower_serves_what_status_says_and_writes_only_the_knock():
    class FakeKube:
        patches = []

        def patch_status(self, kind, ns, name, status):
            self.patches.append((kind, ns, name, status))

    async def run():
        gate = Gate()
        follower = cluster.Follower(FakeKube(), gate)
        follower.loop = asyncio.get_running_loop()
        view, _ = cluster.wanted(gs(status_gate()), NOW)
        await follower._apply("games/odin", (view, [Binding("127.0.0.1", 0, "udp", "query",
                                                             "a2s")]))
        (_, (host, port)), = gate.bound("games/odin").items()
        info = await pya2s.ainfo((host, port), timeout=2)
        await follower.on_knock("games/odin", Knock(True, "join", "login", "Steve"),
                                ("192.0.2.7", 5555))
        await follower._apply("games/odin", None)
        left = gate.bound("games/odin")
        await gate.close()
        return info, left, FakeKube.patches
    info, left, patches = asyncio.run(run())
    assert info.server_name == "Friends of Odin" and info.player_count == 0
    assert "join to wake" in info.map_name
    assert left == {}
    (kind, ns, name, status), = patches
    assert (kind, ns, name) == ("GameServer", "games", "odin") and list(status) == ["knock"]
    assert status["knock"]["address"] == "192.0.2.7" and status["knock"]["player"] == "Steve"


def test_the_follower_lists_then_follows_the_watch():
    """A list, then a watch: a server put at the gate is served on its gate port, one taken
    away (woken) is closed; a status it cannot read is skipped."""
    import socket
    import threading

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a free port for the gate
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    at_gate = status_gate()
    at_gate["ports"] = [{**at_gate["ports"][1], "gatePort": free}]
    body = {"metadata": {"namespace": "games", "name": "odin", "resourceVersion": "1"},
            "status": {"gate": at_gate}}
    woken = {"metadata": {"namespace": "games", "name": "odin", "resourceVersion": "2"},
             "status": {"gate": {"serving": False}}}
    bad = {"metadata": {"namespace": "games", "name": "bad", "resourceVersion": "3"},
           "status": {"gate": {**at_gate, "ports": [{"gatePort": 1, "speaks": "nonsense"}]}}}
    go_on = threading.Event()

    class FakeKube:
        def list_page(self, kind, ns):
            return [body], "1"

        def watch(self, kind, ns, selector, version, seconds):
            go_on.wait(10)
            yield {"type": "MODIFIED", "object": bad}
            yield {"type": "MODIFIED", "object": woken}
            threading.Event().wait(10)

    async def run():
        gate = Gate()
        follower = cluster.Follower(FakeKube(), gate)
        follower.start(asyncio.get_running_loop())
        for _ in range(100):
            if gate.bound("games/odin"):
                break
            await asyncio.sleep(0.05)
        served = dict(gate.bound("games/odin"))
        go_on.set()
        for _ in range(100):
            if not gate.bound("games/odin"):
                break
            await asyncio.sleep(0.05)
        left = dict(gate.bound("games/odin"))
        follower.stop()
        await gate.close()
        return served, left, follower.skipped
    served, left, skipped = asyncio.run(run())
    assert [port for _, port in served.values()] == [free]
    assert left == {} and skipped == 1


def test_a_gate_in_a_nodes_network_listens_and_answers_on_its_own_address():
    """--listen-address: with several addresses on the host (a node's network), a UDP answer
    must leave from the address the query came to, or the client (behind the Service's DNAT)
    never matches it: the listeners bind that address, not the wildcard."""
    assert [b.address for b in cluster.wanted(gs(status_gate()), NOW, "10.89.0.1")[1]] == \
        ["10.89.0.1", "10.89.0.1"]

    async def run():
        gate = Gate()
        await follow(gate, "127.0.0.2", query_only())
        (_, (host, port)), = gate.bound("games/odin").items()
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
            await loop.sock_sendto(s, b"\xff\xff\xff\xffTSource Engine Query\x00", (host, port))
            _, source = await asyncio.wait_for(loop.sock_recvfrom(s, 2048), 2)
        await gate.close()
        return host, source
    host, source = asyncio.run(run())
    assert host == "127.0.0.2" and source[0] == "127.0.0.2"


def test_a_port_that_cannot_be_bound_is_tried_again_while_still_wanted(monkeypatch):
    """EADDRINUSE (the gate pod this one replaces still holds the port): not given up until the
    status changes, but tried again every few seconds while the server is still at the gate."""
    monkeypatch.setattr(cluster, "BIND_RETRY_SECONDS", 0.05)

    class BusyOnce(Gate):
        tries = 0

        async def set_server(self, key, view, bindings):
            BusyOnce.tries += 1
            if BusyOnce.tries == 1:
                raise OSError(98, "Address already in use")
            return await super().set_server(key, view, bindings)

    async def run():
        gate = BusyOnce()
        await follow(gate, "127.0.0.1", query_only())
        bound = dict(gate.bound("games/odin"))
        await gate.close()
        return bound, gate.counts[("error", "bind")]
    bound, errors = asyncio.run(run())
    assert BusyOnce.tries == 2 and errors == 1 and len(bound) == 1


def test_an_event_that_changes_nothing_but_the_time_changes_nothing_served():
    """Every GameServer event (the prober's, the session's) reaches the gate; only a changed
    status.gate may re-apply the server's listeners."""
    class CountingGate(Gate):
        sets = 0

        async def set_server(self, key, view, bindings):
            CountingGate.sets += 1
            return await super().set_server(key, view, bindings)

    async def run():
        gate = CountingGate()
        closed = dict(window_open=False, opens_at="2026-12-08T18:00:00Z")
        # Three events, each read at a later time, then one that renames the server.
        await follow(gate, "127.0.0.1", *[query_only(**closed)] * 3,
                     query_only(**closed, name="Renamed"))
        name = gate.views["games/odin"].name
        await gate.close()
        return name
    assert asyncio.run(run()) == "Renamed"
    assert CountingGate.sets == 2
