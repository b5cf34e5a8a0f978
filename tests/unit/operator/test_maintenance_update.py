"""Updates of moving tags (issue 28, item 4), through the whole reconcile (FakeKube): an update
asked by annotation is held like any change while players are on, then waits for its
beforeUpdate backup (taken when the hold ends, just before the roll), then rolls the pod with
imagePullPolicy Always; the running template keeps
Always (no second roll) until another change rolls it anyway."""
import copy
import datetime as dt

import pytest

from fake_kube import FakeKube
from fixtures import game, gameserver

from peon.operator.controller import Controller

KEY = ("GameServer", "games", "odin")
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def world(tmp_path, monkeypatch):
    clock_file = tmp_path / "now"
    monkeypatch.setenv("PEON_CLOCK_FILE", str(clock_file))

    def set_now(t):
        clock_file.write_text(t.isoformat())
    set_now(T0)
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    c.cache.put(c.cache.games, "valheim", game(), False)
    players = {"n": 2}
    monkeypatch.setattr(c.sessions, "players_now", lambda gs: players["n"])
    put_server(kube, c, gameserver(maintenance={"maxDelay": "1h"}))
    c.reconcile(KEY)
    ready(kube, c)
    c.reconcile(KEY)
    kube.events.clear()
    return kube, c, players, set_now


def put_server(kube, c, gs):
    kube.objects[KEY] = gs
    c.cache.put(c.cache.gameservers, ("games", "odin"), gs, False)


def ready(kube, c):
    dep = copy.deepcopy(kube.objects[("Deployment", "games", "odin")])
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                     "readyReplicas": 1}
    c.cache.put(c.cache.children, ("Deployment", "games", "odin"), dep, False)


def annotate(kube, c, **values):
    gs = copy.deepcopy(kube.objects[KEY])
    gs["metadata"].setdefault("annotations", {}).update(values)
    put_server(kube, c, gs)


def template(kube):
    return kube.objects[("Deployment", "games", "odin")]["spec"]["template"]


def container(kube):
    return template(kube)["spec"]["containers"][0]


def status(kube):
    return kube.objects[KEY].get("status") or {}


def cond(kube, type_):
    return next((x for x in status(kube).get("conditions") or [] if x["type"] == type_), None)


def backups(kube):
    return [o for k, o in kube.objects.items() if k[0] == "GameServerBackup"]


def finish_backups(c, kube, phase="Succeeded"):
    for b in backups(kube):
        done = {**b, "status": {"phase": phase, "message": "disk full"}}
        c.cache.put(c.cache.backups, (b["metadata"]["namespace"], b["metadata"]["name"]),
                    done, False)


def asked_update(world):
    kube, c, players, set_now = world
    before = copy.deepcopy(template(kube))
    assert "imagePullPolicy" not in container(kube)  # the Game's (Kubernetes') default
    set_now(T0 + dt.timedelta(minutes=1))
    annotate(kube, c, **{"peon.dev/update": "2026-05-01T12:01:00Z"})
    c.reconcile(KEY)
    return before


def test_an_update_is_held_for_the_players_then_backed_up_just_before_it_pulls_again(world):
    kube, c, players, set_now = world
    before = asked_update(world)
    # 2 players on: held like any change, and not backed up yet (they still change the world).
    assert not backups(kube)
    assert template(kube) == before
    m = status(kube)["maintenance"]
    assert m["pending"] == "an update (the image pulled again)" and m["reason"] == "PlayersOnline"
    since = m["pendingSince"]
    # They leave: the hold ends, and first the world is backed up as it is now; nothing rolls
    # meanwhile, and status still says the update waits (for the backup), since when it did.
    players["n"] = 0
    set_now(T0 + dt.timedelta(minutes=7))
    c.reconcile(KEY)
    [b] = backups(kube)
    assert b["spec"].get("reason") == "BeforeUpdate" or "BeforeUpdate" in str(b)
    assert template(kube) == before
    updated = cond(kube, "Updated")
    assert updated["status"] == "False" and updated["reason"] == "BackingUp"
    m = status(kube)["maintenance"]
    assert (m["pending"], m["reason"], m["pendingSince"]) == (
        "an update (the image pulled again)", "BackingUp", since)
    assert cond(kube, "ChangePending")["status"] == "True"
    c.reconcile(KEY)
    assert len(backups(kube)) == 1 and template(kube) == before  # not asked twice
    # Backed up: the pod rolls with the image pulled again.
    finish_backups(c, kube)
    set_now(T0 + dt.timedelta(minutes=8))
    c.reconcile(KEY)
    assert container(kube)["imagePullPolicy"] == "Always"
    assert template(kube)["metadata"]["annotations"]["peon.dev/update"] == "2026-05-01T12:01:00Z"
    assert [e[1] for e in kube.events if e[1] == "Updated"] == ["Updated"]
    assert any(e[1] == "ChangeApplied" for e in kube.events)
    # The new pod runs: Always stays on its template (taking it away would roll it again),
    # and the update is not made twice.
    ready(kube, c)
    rolled = copy.deepcopy(template(kube))
    kube.events.clear()
    for minute in (9, 30):
        set_now(T0 + dt.timedelta(minutes=minute))
        c.reconcile(KEY)
    assert template(kube) == rolled and not [e for e in kube.events if e[1] == "Updated"]
    m = status(kube)["maintenance"]  # written once the new pod's phase settled
    assert cond(kube, "Updated")["status"] == "True" and not m.get("pending")
    assert m["lastUpdate"] == "2026-05-01T12:01:00Z" and m["updatedAt"] == "2026-05-01T12:08:00Z"
    assert m["updatedImage"] == container(kube)["image"]  # the image pulled again
    # The next change rolls the pod anyway: it goes back to the Game's pull policy.
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["settings"][0]["content"]["SERVER_PASS"] = "swordfish"
    gs["metadata"]["generation"] += 1
    put_server(kube, c, gs)
    c.reconcile(KEY)
    assert "imagePullPolicy" not in container(kube)
    assert "peon.dev/update" not in template(kube)["metadata"]["annotations"]
    ready(kube, c)
    c.reconcile(KEY)
    assert "imagePullPolicy" not in container(kube) and len(backups(kube)) == 1


def test_a_failed_backup_holds_the_update_and_says_so(world):
    kube, c, players, set_now = world
    players["n"] = 0
    before = asked_update(world)
    finish_backups(c, kube, "Failed")
    c.reconcile(KEY)
    assert template(kube) == before
    updated = cond(kube, "Updated")
    assert updated["reason"] == "BackupFailed" and "disk full" in updated["message"]


def test_without_before_update_backups_an_empty_server_updates_at_once(world):
    kube, c, players, set_now = world
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["backup"] = {"beforeUpdate": False}
    put_server(kube, c, gs)
    players["n"] = 0
    asked_update(world)
    assert not backups(kube)
    assert container(kube)["imagePullPolicy"] == "Always"


def test_a_stopped_server_updates_when_it_runs_again(world):
    kube, c, players, set_now = world
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["backup"] = {"beforeUpdate": False}
    put_server(kube, c, gs)
    annotate(kube, c, **{"peon.dev/sleep": "2026-05-01T12:00:00Z"})  # kubectl peon stop
    c.reconcile(KEY)
    asked_update(world)
    dep = kube.objects[("Deployment", "games", "odin")]
    assert dep["spec"]["replicas"] == 0 and "imagePullPolicy" not in container(kube)
    assert not (status(kube).get("maintenance") or {}).get("lastUpdate")
    set_now(T0 + dt.timedelta(minutes=3))
    annotate(kube, c, **{"peon.dev/wake": "2026-05-01T12:03:00Z"})  # kubectl peon start
    c.reconcile(KEY)
    assert kube.objects[("Deployment", "games", "odin")]["spec"]["replicas"] == 1
    assert container(kube)["imagePullPolicy"] == "Always"


def test_a_stop_takes_always_away_so_the_next_start_pulls_as_the_game_says(world):
    kube, c, players, set_now = world
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["backup"] = {"beforeUpdate": False}
    put_server(kube, c, gs)
    players["n"] = 0
    asked_update(world)
    assert container(kube)["imagePullPolicy"] == "Always"
    ready(kube, c)
    set_now(T0 + dt.timedelta(minutes=5))
    annotate(kube, c, **{"peon.dev/sleep": "2026-05-01T12:05:00Z"})
    c.reconcile(KEY)
    assert kube.objects[("Deployment", "games", "odin")]["spec"]["replicas"] == 0
    assert "imagePullPolicy" not in container(kube)
    set_now(T0 + dt.timedelta(minutes=9))
    annotate(kube, c, **{"peon.dev/wake": "2026-05-01T12:09:00Z"})
    c.reconcile(KEY)
    assert kube.objects[("Deployment", "games", "odin")]["spec"]["replicas"] == 1
    assert "imagePullPolicy" not in container(kube)  # made once, not again at the start
