"""The gate in a cluster (gate/cluster.py): what the operator's status.gate becomes, served on
127.0.0.1 and asked with python-a2s; a knock written back as status.knock only."""
import asyncio
import datetime as dt

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
