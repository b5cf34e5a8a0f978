"""Changes that wait for an empty server, through the whole reconcile (FakeKube): what the
operator applies while a change is held, what status says, the warnings through a console run
in the container, and the change applied when the players leave or at the deadline."""
import copy
import datetime as dt

import pytest

from fake_kube import FakeKube
from fixtures import game, gameserver

from peon.operator.controller import Controller
from peon.operator.maintenance import ANNOTATION_TEMPLATE_HASH

KEY = ("GameServer", "games", "odin")
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def world(tmp_path, monkeypatch):
    clock_file = tmp_path / "now"
    monkeypatch.setenv("PEON_CLOCK_FILE", str(clock_file))
    now = [T0]

    def set_now(t):
        now[0] = t
        clock_file.write_text(t.isoformat())
    set_now(T0)
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    g = game()
    g["spec"]["console"] = {"protocol": "exec", "command": ["rcon-cli"], "say": "say {message}"}
    c.cache.put(c.cache.games, "valheim", g, False)
    players = {"n": 2}
    monkeypatch.setattr(c.sessions, "players_now", lambda gs: players["n"])
    gs = gameserver(maintenance={"maxDelay": "1h"})
    put_server(kube, c, gs)
    c.reconcile(KEY)
    ready(kube, c)
    c.reconcile(KEY)
    kube.events.clear()
    return kube, c, players, set_now


def put_server(kube, c, gs):
    kube.objects[KEY] = gs
    c.cache.put(c.cache.gameservers, ("games", "odin"), gs, False)


def ready(kube, c):
    """The kubelet's part: the Deployment's pod is up, a pod runs."""
    dep = copy.deepcopy(kube.objects[("Deployment", "games", "odin")])
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                     "readyReplicas": 1}
    c.cache.put(c.cache.children, ("Deployment", "games", "odin"), dep, False)
    pod = {"kind": "Pod", "metadata": {"name": "odin-abc", "namespace": "games",
                                      "labels": {"peon.dev/gameserver": "odin"}},
           "status": {"phase": "Running"}}
    c.cache.put(c.cache.pods, ("games", "odin-abc"), pod, False) if hasattr(c.cache, "pods") \
        else None


def change_password(kube, c, password):
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["settings"][0]["content"]["SERVER_PASS"] = password
    gs["metadata"]["generation"] += 1
    put_server(kube, c, gs)


def template(kube):
    return kube.objects[("Deployment", "games", "odin")]["spec"]["template"]


def status(kube):
    return kube.objects[KEY].get("status") or {}


def cond(kube, type_):
    return next((x for x in status(kube).get("conditions") or [] if x["type"] == type_), None)


def secret_password(kube):
    import base64
    return base64.b64decode(kube.objects[("Secret", "games", "odin-env")]["data"]["SERVER_PASS"]).decode()


def test_a_settings_change_with_players_on_waits_and_status_says_so(world):
    kube, c, players, set_now = world
    before = copy.deepcopy(template(kube))
    assert ANNOTATION_TEMPLATE_HASH in kube.objects[("Deployment", "games", "odin")]["metadata"]["annotations"]
    change_password(kube, c, "swordfish")
    again = c.reconcile(KEY)
    assert template(kube) == before  # nothing rolls
    assert secret_password(kube) == "hunter22"  # the running pod's settings are kept too
    m = status(kube)["maintenance"]
    assert m["pending"] == "new settings" and m["reason"] == "PlayersOnline"
    assert m["deadline"] == "2026-05-01T13:00:00Z"
    pending = cond(kube, "ChangePending")
    assert pending["status"] == "True" and "2 players on" in pending["message"]
    assert [e[1] for e in kube.events] == ["ChangeHeld"]
    assert again is not None

    # Still held later, nothing said twice.
    set_now(T0 + dt.timedelta(minutes=20))
    c.reconcile(KEY)
    assert template(kube) == before and [e[1] for e in kube.events] == ["ChangeHeld"]

    # The players leave: applied at once.
    players["n"] = 0
    c.reconcile(KEY)
    assert template(kube) != before and secret_password(kube) == "swordfish"
    ready(kube, c)  # the new pod is up; its status is written once the phase settled
    c.reconcile(KEY)
    assert "maintenance" not in status(kube) or not status(kube)["maintenance"].get("pending")
    assert cond(kube, "ChangePending")["status"] == "False"
    assert [e[1] for e in kube.events if e[1] != "Applied"] == ["ChangeHeld", "ChangeApplied"]


def test_warned_through_the_console_then_applied_at_the_deadline_with_players_on(world):
    kube, c, players, set_now = world
    before = copy.deepcopy(template(kube))
    change_password(kube, c, "swordfish")
    c.reconcile(KEY)
    for minute in (49, 50, 52, 55, 59):
        set_now(T0 + dt.timedelta(minutes=minute))
        c.reconcile(KEY)
    said = [cmd for pod, cmd in kube.execs]
    assert said == [("rcon-cli", "say [Peon] The server restarts in 10 minutes (new settings)."),
                    ("rcon-cli", "say [Peon] The server restarts in 5 minutes (new settings)."),
                    ("rcon-cli", "say [Peon] The server restarts in 1 minute (new settings).")]
    assert all(pod == "odin-abc" for pod, _ in kube.execs)
    assert template(kube) == before
    set_now(T0 + dt.timedelta(minutes=60))
    c.reconcile(KEY)
    assert template(kube) != before
    assert any(e[1] == "ChangeApplied" and "deadline" in e[2] and "2 players on" in e[2]
               for e in kube.events)


def test_a_game_without_a_console_still_holds_and_says_it_cannot_warn(world):
    kube, c, players, set_now = world
    g = game()
    c.cache.put(c.cache.games, "valheim", g, False)
    before = copy.deepcopy(template(kube))
    change_password(kube, c, "swordfish")
    c.reconcile(KEY)
    assert template(kube) == before
    assert "declares no console" in status(kube)["maintenance"]["console"]
    # At the warning times nothing is tried and nothing fails: status says it, no Event.
    kube.events.clear()
    for minutes in (50, 55, 59):  # 10, 5 and 1 minute before the 1h deadline
        set_now(T0 + dt.timedelta(minutes=minutes))
        c.reconcile(KEY)
    assert not [e for e in kube.events if e[1] in ("ConsoleFailed", "PlayersWarned")], kube.events
    assert template(kube) == before and not kube.execs
    assert "declares no console" in status(kube)["maintenance"]["console"]


def test_an_unreadable_player_count_holds_and_says_so(world):
    kube, c, players, set_now = world
    players["n"] = None
    change_password(kube, c, "swordfish")
    c.reconcile(KEY)
    m = status(kube)["maintenance"]
    assert m["reason"] == "PlayersUnknown" and "cannot be read" in m["message"]


def test_policy_now_and_no_block_roll_at_once(world):
    kube, c, players, set_now = world
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["maintenance"] = {"policy": "Now"}
    put_server(kube, c, gs)
    before = copy.deepcopy(template(kube))
    change_password(kube, c, "swordfish")
    c.reconcile(KEY)
    assert template(kube) != before
    gs = copy.deepcopy(kube.objects[KEY])
    del gs["spec"]["maintenance"]
    put_server(kube, c, gs)
    before = copy.deepcopy(template(kube))
    change_password(kube, c, "marlin")
    c.reconcile(KEY)
    assert template(kube) != before
    ready(kube, c)
    c.reconcile(KEY)
    assert cond(kube, "ChangePending") is None and not status(kube).get("maintenance")


def test_a_restart_asked_for_is_held_too_and_a_stop_is_not(world):
    kube, c, players, set_now = world
    before = copy.deepcopy(template(kube))
    gs = copy.deepcopy(kube.objects[KEY])
    gs["metadata"]["annotations"] = {"peon.dev/restartedAt": "2026-05-01T12:00:00Z"}
    put_server(kube, c, gs)
    c.reconcile(KEY)
    assert template(kube) == before
    assert status(kube)["maintenance"]["pending"] == "a restart asked for"
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["state"] = "Stopped"
    put_server(kube, c, gs)
    c.reconcile(KEY)
    dep = kube.objects[("Deployment", "games", "odin")]
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["template"]["metadata"]["annotations"]["peon.dev/restartedAt"] == \
        "2026-05-01T12:00:00Z"  # applied with the stop: nobody is on a stopped server


def test_a_scheduled_restart_rolls_the_pod_at_its_slot(world):
    kube, c, players, set_now = world
    gs = copy.deepcopy(kube.objects[KEY])
    gs["spec"]["maintenance"] = {"restartSchedule": {"cron": "0 13 * * *"}}
    put_server(kube, c, gs)
    c.reconcile(KEY)  # the schedule is seen: no slot before this is made up
    before = copy.deepcopy(template(kube))
    assert status(kube)["maintenance"]["nextRestart"] == "2026-05-01T13:00:00Z"
    set_now(T0 + dt.timedelta(minutes=50))
    c.reconcile(KEY)
    assert kube.execs[-1][1][-1].endswith("restarts in 10 minutes (scheduled restart).")
    assert template(kube) == before
    set_now(T0 + dt.timedelta(minutes=60, seconds=2))
    c.reconcile(KEY)
    after = template(kube)["metadata"]["annotations"]
    assert after["peon.dev/scheduled-restart"] == "2026-05-01T13:00:00Z"
    ready(kube, c)
    c.reconcile(KEY)
    assert status(kube)["maintenance"]["lastRestart"] == "2026-05-01T13:00:00Z"
    assert any(e[1] == "ScheduledRestart" for e in kube.events)
    # Once per slot: the next look changes nothing.
    ready(kube, c)
    snapshot = copy.deepcopy(template(kube))
    c.reconcile(KEY)
    assert template(kube) == snapshot
