"""Pay only for play, on the real control plane: windows, wake-ups, session timers and idle
stops drive the server, with the operator's clock controlled by the test and players reported
by fake servers speaking the real A2S and Minecraft protocols. None of it touches the spec."""
import datetime as dt
import sys
import pathlib

import pytest

from gs_helpers import apply_as_user, condition, events_for, gameserver, wait_event, wait_phase
from kube_helpers import wait_for

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fakegames import A2SServer, MinecraftServer  # noqa: E402

pytestmark = pytest.mark.usefixtures("operator")


def hhmm(t):
    return f"{t:%H:%M}"


def uptime_of(kube, ns, name):
    return kube.status_of("GameServer", ns, name).get("uptime") or {}


def replicas(kube, ns, name):
    return kube.get("Deployment", ns, name)["spec"]["replicas"]


def spec_of(kube, ns, name):
    g = kube.get("GameServer", ns, name)
    return g["metadata"]["generation"], g["spec"]


def test_window_stops_outside_and_starts_inside_without_touching_spec(kube, namespace, clock):
    now = clock.now().replace(second=0, microsecond=0)
    start, end = now + dt.timedelta(hours=1), now + dt.timedelta(hours=2)
    apply_as_user(kube, gameserver("win", namespace, uptime={
        "timeZone": "UTC", "windows": [{"start": hhmm(start), "end": hhmm(end)}]}))
    g = wait_phase(kube, namespace, "win", "Stopped")
    before = spec_of(kube, namespace, "win")
    assert g["status"]["uptime"]["reason"] == "OutsideWindow"
    assert g["status"]["uptime"]["nextChange"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert replicas(kube, namespace, "win") == 0
    assert "outside the uptime windows" in condition(g, "Ready")["message"]

    clock.set(start + dt.timedelta(minutes=1))
    g = wait_phase(kube, namespace, "win", "Running")
    assert g["status"]["uptime"]["reason"] == "InWindow"
    clock.set(end + dt.timedelta(minutes=1))
    wait_phase(kube, namespace, "win", "Stopped")
    wait_event(kube, namespace, "win", "AutoStart")
    wait_event(kube, namespace, "win", "AutoStop")
    assert spec_of(kube, namespace, "win") == before  # the operator never wrote spec


def test_wake_up_runs_one_session_then_the_timer_stops_it(kube, namespace, clock):
    now = clock.now().replace(second=0, microsecond=0)
    far = now + dt.timedelta(hours=6)
    gs = gameserver("sleepy", namespace, uptime={
        "windows": [{"start": hhmm(far), "end": hhmm(far + dt.timedelta(hours=1))}],
        "session": {"maxDuration": "1h"}})
    apply_as_user(kube, gs)
    wait_phase(kube, namespace, "sleepy", "Stopped")
    gs["metadata"]["annotations"] = {"peon.dev/wake": clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
    apply_as_user(kube, gs)
    g = wait_phase(kube, namespace, "sleepy", "Running")
    assert g["status"]["uptime"]["reason"] == "WokenUp"
    clock.advance(minutes=61)
    g = wait_phase(kube, namespace, "sleepy", "Stopped")
    # Why it stopped, and why it stays down: outside its windows until the next one.
    up = wait_for("the standing reason", lambda: (lambda u: u if u.get("reason") == "OutsideWindow"
                                                   else None)(uptime_of(kube, namespace, "sleepy")))
    assert up["endReason"] == "SessionTimer"
    wait_event(kube, namespace, "sleepy", "AutoStop", "session timer")
    # The same wake-up does not start it again.
    clock.advance(minutes=5)
    assert uptime_of(kube, namespace, "sleepy")["running"] is False


def test_spec_stopped_wins_over_a_wake_up(kube, namespace, clock):
    gs = gameserver("off", namespace, state="Stopped", uptime={"session": {"maxDuration": "1h"}})
    gs["metadata"]["annotations"] = {"peon.dev/wake": clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
    apply_as_user(kube, gs)
    g = wait_phase(kube, namespace, "off", "Stopped")
    assert g["status"]["uptime"]["reason"] == "Stopped"


def test_players_leaving_drive_an_idle_stop_over_real_a2s(kube, namespace, clock):
    server = A2SServer(players=2, max_players=10)
    try:
        apply_as_user(kube, gameserver("lonely", namespace, uptime={"idle": {
            "after": "5m", "grace": "0m", "probeAddress": f"127.0.0.1:{server.port}",
            "probeIntervalSeconds": 5}}))
        wait_phase(kube, namespace, "lonely", "Running")
        p = wait_for("players reported", lambda: (kube.status_of("GameServer", namespace, "lonely")
                                                  .get("players") or {}).get("online") == 2)
        assert p and server.queries >= 1
        clock.advance(minutes=10)  # players on: time passing changes nothing
        wait_for("a few more queries", lambda: server.queries >= 3)
        assert kube.status_of("GameServer", namespace, "lonely")["phase"] == "Running"

        server.players = 0
        pl = wait_for("nobody on", lambda: (lambda p: p if p.get("online") == 0 else None)(
            kube.status_of("GameServer", namespace, "lonely").get("players") or {}))
        assert pl["lastSeen"]
        clock.advance(minutes=6)
        g = wait_phase(kube, namespace, "lonely", "Stopped")
        assert g["status"]["uptime"]["reason"] == "Idle"
        assert replicas(kube, namespace, "lonely") == 0
        # Events are posted from the operator's queue, after the status that records the stop.
        wait_for("the AutoStop Event", lambda: any(
            e["reason"] == "AutoStop" and "nobody was on" in e["message"]
            for e in events_for(kube, namespace, "lonely")), 30)
    finally:
        server.close()


def test_a_failing_query_never_stops_a_server(kube, namespace, clock):
    import socket
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        apply_as_user(kube, gameserver("deaf", namespace, uptime={"idle": {
            "after": "1m", "grace": "0m", "probeAddress": f"127.0.0.1:{silent.getsockname()[1]}"}}))
        wait_phase(kube, namespace, "deaf", "Running")
        clock.advance(minutes=30)
        g = wait_phase(kube, namespace, "deaf", "Running")
        assert g["status"]["uptime"]["running"] is True
        assert not g["status"].get("players")
    finally:
        silent.close()


def test_minecraft_players_show_in_status_and_kubectl(kube, kubectl, namespace):
    server = MinecraftServer(players=3, max_players=20)
    try:
        apply_as_user(kube, gameserver("blocks", namespace, gameUid="minecraft", settings=[
            {"type": "env", "name": "eula", "content": {"EULA": "TRUE"}}], uptime={"idle": {
                "after": "30m", "probeAddress": f"127.0.0.1:{server.port}"}}))
        wait_for("3 players", lambda: (kube.status_of("GameServer", namespace, "blocks")
                                       .get("players") or {}).get("online") == 3)
        row = kubectl("get", "pgs", "blocks", "-n", namespace, "--no-headers").stdout.split()
        assert "3" in row and "InSession" in row
    finally:
        server.close()


def test_backup_before_an_idle_stop_holds_the_stop_until_it_finished(kube, namespace, clock):
    server = A2SServer(players=0)
    try:
        idle = {"after": "5m", "grace": "0m", "probeAddress": f"127.0.0.1:{server.port}"}
        # A backup volume that can never bind: the backup stays Pending, so the stop must wait.
        apply_as_user(kube, gameserver("careful", namespace, uptime={"idle": idle, "backupBeforeStop": True},
                                       backup={"storage": {"storageClassName": "no-such-class"}}))
        wait_phase(kube, namespace, "careful", "Running")
        wait_for("players reported", lambda: (kube.status_of("GameServer", namespace, "careful")
                                              .get("players") or {}).get("online") == 0)
        clock.advance(minutes=6)
        held = wait_for("the stop to be held", lambda: (lambda u: u if "before stopping" in
                        (u.get("message") or "") else None)(uptime_of(kube, namespace, "careful")))
        assert held["endReason"] == "Idle" and held["running"] is True
        run = [b for b in kube.list("GameServerBackup", namespace) if b["spec"]["reason"] == "BeforeStop"]
        # Its Job is created but its pod cannot schedule: the run is not finished.
        assert len(run) == 1 and (run[0].get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        clock.advance(minutes=1)
        assert replicas(kube, namespace, "careful") == 1
        assert kube.status_of("GameServer", namespace, "careful")["phase"] == "Running"

        # With a volume that binds, the backup succeeds and only then does the server stop.
        apply_as_user(kube, gameserver("tidy", namespace, uptime={"idle": idle, "backupBeforeStop": True}))
        wait_phase(kube, namespace, "tidy", "Running")
        wait_for("players reported", lambda: (kube.status_of("GameServer", namespace, "tidy")
                                              .get("players") or {}).get("online") == 0)
        clock.advance(minutes=6)
        g = wait_phase(kube, namespace, "tidy", "Stopped")
        backups = [b for b in kube.list("GameServerBackup", namespace)
                   if b["spec"]["gameServer"] == "tidy" and b["spec"]["reason"] == "BeforeStop"]
        assert len(backups) == 1 and backups[0]["status"]["phase"] == "Succeeded"
        assert g["status"]["uptime"]["reason"] == "Idle"
    finally:
        server.close()
