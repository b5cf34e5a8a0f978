"""The GameServer reconcile driven through an in-memory API (fake_kube.FakeKube): what it
writes, in what order, and what it leaves when the API server refuses a child."""
import pytest

from fake_kube import FakeKube, api_error
from fixtures import game, gameserver

from peon.cache import Cache
from peon.controller import Controller
from peon.games import GameReconciler


@pytest.fixture
def world():
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    g = game()
    g["metadata"]["generation"] = 1
    c.cache.put(c.cache.games, "valheim", g, False)
    gs = gameserver(network={"type": "NodePort"})
    kube.objects[("GameServer", "games", "odin")] = gs
    c.cache.put(c.cache.gameservers, ("games", "odin"), gs, False)
    return kube, c


def child_writes(kube):
    return [(v, k) for v, k, _ in kube.writes() if k not in ("GameServer", "Event")]


def test_a_first_build_is_tried_whole_then_made(world):
    kube, c = world
    again = c.reconcile(("GameServer", "games", "odin"))
    dry = [k for v, k, _ in kube.calls if v == "dry-run"]
    made = [k for v, k in child_writes(kube) if v == "apply"]
    assert made == ["Secret", "PersistentVolumeClaim", "Service", "Deployment"]
    # Every child after the first is tried before the first is made; the first's own create
    # is its try (a refusal of it leaves nothing either).
    assert dry == made[1:]
    first_apply = next(i for i, c_ in enumerate(kube.calls) if c_[0] == "apply")
    assert all(v == "dry-run" for v, _, _ in kube.calls[:first_apply] if v != "get")
    assert [v for v, _, _ in kube.calls if v == "dry-run"] == ["dry-run"] * 3
    # Pending (no pod yet) is held back a moment: a server up within it shows Running first.
    assert "status" not in kube.objects[("GameServer", "games", "odin")]
    assert 0 < again <= 2.0


def test_a_phase_on_its_way_is_written_once_it_has_lasted(world, monkeypatch):
    import peon.controller as ctl
    kube, c = world
    clock = [1000.0]
    monkeypatch.setattr(ctl.time, "monotonic", lambda: clock[0])
    c.reconcile(("GameServer", "games", "odin"))
    clock[0] += 2.5  # still no pod: Pending has lasted, and is said
    c.reconcile(("GameServer", "games", "odin"))
    status = kube.objects[("GameServer", "games", "odin")]["status"]
    assert status["phase"] == "Pending"
    assert next(x for x in status["conditions"] if x["type"] == "Valid")["status"] == "True"
    assert [e for e in kube.events if e[1] == "Pending"] == []  # no Event repeats the phase


def test_a_refused_first_build_makes_nothing_and_says_why(world):
    kube, c = world
    kube.refuse["Service"] = api_error(422, 'Service "odin" is invalid: spec.ports[0].nodePort: '
                                            "Invalid value: 30000: provided port is already allocated")
    c.reconcile(("GameServer", "games", "odin"))
    assert child_writes(kube) == []
    gs = kube.objects[("GameServer", "games", "odin")]
    valid = next(x for x in gs["status"]["conditions"] if x["type"] == "Valid")
    assert valid["reason"] == "Rejected" and "already allocated" in valid["message"]
    assert ("Warning", "Rejected", valid["message"]) in kube.events


@pytest.mark.parametrize("kind", ["Secret", "PersistentVolumeClaim", "Deployment"])
def test_a_refusal_of_any_child_of_a_first_build_makes_nothing(world, kind):
    kube, c = world
    kube.refuse[kind] = api_error(403, f'{kind.lower()}s "odin" is forbidden: exceeded quota')
    c.reconcile(("GameServer", "games", "odin"))
    assert [k for k, _, _ in kube.objects if k not in ("GameServer", "Game")] == []  # nothing made
    valid = next(x for x in kube.objects[("GameServer", "games", "odin")]["status"]["conditions"]
                 if x["type"] == "Valid")
    assert valid["reason"] == "Rejected" and "exceeded quota" in valid["message"]


def test_a_converged_server_is_not_tried_again(world):
    kube, c = world
    c.reconcile(("GameServer", "games", "odin"))
    c.cache.put(c.cache.gameservers, ("games", "odin"), kube.objects[("GameServer", "games", "odin")],
                False)
    kube.calls.clear()
    c.reconcile(("GameServer", "games", "odin"))
    assert [x for x in kube.calls if x[0] != "get"] == []


def test_the_game_reconciler_writes_once_and_only_for_games_it_serves(world):
    kube, c = world
    g = c.cache.games["valheim"]
    kube.objects[("Game", None, "valheim")] = g
    alone = Cache()
    alone.put(alone.games, "valheim", g, False)
    lonely = GameReconciler(kube, alone, whole_cluster=False)
    lonely.reconcile("valheim")  # a namespaced operator none of whose servers use it
    assert kube.writes() == []
    r = GameReconciler(kube, c.cache, whole_cluster=False)
    r.reconcile("valheim")
    r.reconcile("valheim")  # nothing changed: nothing written
    assert kube.writes() == [("status", "Game", "valheim")]
    assert kube.objects[("Game", None, "valheim")]["status"]["conditions"][0]["status"] == "True"
