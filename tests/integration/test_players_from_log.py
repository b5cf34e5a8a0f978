"""Players counted from a server's log (issue 25, item 6: a Game may name log lines for joins
and leaves where its query breaks), on the bed's real node: the test game prints
`testgame: player NAME joined (N online)` and `... left ...` as players come and go over its
game port, a copy of its Game counts them from those lines (query protocol log, no query port
asked), and the server's status.players follows, names too, and drives an idle stop.

Its own namespaces (lg-*) and its own operator: the session's real-node operator keeps r-*."""
from __future__ import annotations

import time

import pytest
import yaml

from conftest import Operator, fresh_namespace
from gs_helpers import apply_as_user, events_for, wait_event, wait_phase
from kube_helpers import api_error, message, wait_for
from realnode_helpers import GAME_FILE, OPERATOR_IMAGE, service_address, tg_server, udp

pytestmark = pytest.mark.timeout(900)
LOG = {"join": r"player (?P<player>[A-Za-z0-9_-]+) joined",
       "leave": r"player (?P<player>[A-Za-z0-9_-]+) left"}


@pytest.fixture
def lgns(kube):
    yield from fresh_namespace(kube, "lg")


@pytest.fixture(scope="module")
def lg_operator(kubeconfig, crds, real_node, tmp_path_factory, rn_clock):
    with Operator.running(kubeconfig, tmp_path_factory.mktemp("lg-operator") / "operator.log",
                          ["--job-image", OPERATOR_IMAGE, "--namespace", "lg-*"],
                          clock_file=rn_clock.path) as op:
        yield op


def log_game(name: str, log: dict) -> dict:
    game = yaml.safe_load(GAME_FILE.read_text())
    game["metadata"] = {"name": name}
    game["spec"]["query"] = {"protocol": "log", "log": log}
    return game


def players(kube, ns, name) -> dict:
    return kube.status_of("GameServer", ns, name).get("players") or {}


def test_admission_refuses_a_pattern_re2_cannot_read_and_the_operator_one_that_backtracks(
        kube, crds, lgns, lg_operator):
    e = api_error(lambda: kube.apply(log_game("lg-bad", {**LOG, "join": r"player (?P<player>\w+"})))
    assert e.status == 422 and "spec.query.log" in message(e), message(e)
    e = api_error(lambda: kube.apply(log_game("lg-bad", {**LOG, "leave": r"player (\w+) left"})))
    assert e.status == 422 and "leave must be a regular expression with a group" in message(e)
    e = api_error(lambda: kube.apply(log_game("lg-bad", {"join": LOG["join"]})))
    assert e.status == 422 and "join and leave go together" in message(e), message(e)
    print("\nrefused:", message(api_error(lambda: kube.apply(
        log_game("lg-bad", {**LOG, "join": r"player (?P<player>\w+"})))))
    # RE2 reads it, but Python's backtracking may not end on a nearly matching line: the Game's
    # Valid condition says so, and its server's (with a Warning Event). The operator judges
    # the Games its servers use (it watches lg-* only).
    game = f"lg-slow-{lgns}"
    kube.apply(log_game(game, {**LOG, "join": r"((?P<player>\w+) )+joined"}))
    try:
        apply_as_user(kube, tg_server("slow", lgns, gameUid=game))

        def valid(kind, ns, name):
            conds = kube.status_of(kind, ns, name).get("conditions") or []
            return next((c for c in conds if c["type"] == "Valid" and c["status"] == "False"), None)
        said = wait_for("the Game judged", lambda: valid("Game", None, game), 60)
        assert "query.log: join repeats a group that repeats" in said["message"], said
        said = wait_for("the server judged", lambda: valid("GameServer", lgns, "slow"), 60)
        assert "repeats a group that repeats" in said["message"], said
        wait_for("a Warning Event", lambda: [e for e in events_for(kube, lgns, "slow")
                                             if e["type"] == "Warning"
                                             and "repeats a group" in e["message"]], 30)
        assert kube.list("Pod", lgns) == []
    finally:
        kube.delete("GameServer", lgns, "slow")
        wait_for("the server to go", lambda: kube.get("GameServer", lgns, "slow") is None, 60)
        kube.delete("Game", None, game)


def test_status_players_follow_the_log_lines_and_drive_an_idle_stop(
        kube, kubectl, lgns, lg_operator, testgame, rn_clock):
    rn_clock.reset()
    game = f"lg-testgame-{lgns}"
    kube.apply(log_game(game, LOG))
    try:
        apply_as_user(kube, tg_server("saga", lgns, gameUid=game, uptime={"idle": {
            "after": "5m", "grace": "0m", "probeIntervalSeconds": 5}}))
        try:
            wait_phase(kube, lgns, "saga", "Running", timeout=180)
        except AssertionError:
            print("pods:", kubectl("-n", lgns, "get", "pods", "-o", "wide").stdout,
                  kubectl("-n", lgns, "describe", "pods").stdout[-3000:],
                  [(e["reason"], e["message"]) for e in kube.list("Event", lgns)][-15:], sep="\n")
            raise
        t0 = time.monotonic()
        wait_for("the log read: nobody on", lambda: players(kube, lgns, "saga").get("online") == 0, 60)
        first_read = time.monotonic() - t0
        ip, port = service_address(kube, lgns, "saga")
        for who in ("alice", "bob"):
            assert udp(ip, port, f"JOIN {who} hunter22") == f"WELCOME {who}"
        t1 = time.monotonic()
        got = wait_for("alice and bob in status", lambda: (lambda p: p if p.get("online") == 2
                                                           else None)(players(kube, lgns, "saga")), 60)
        seen = time.monotonic() - t1
        assert got["names"] == ["alice", "bob"] and got["max"] == 0, got
        out = kubectl("-n", lgns, "get", "pgs", "saga").stdout.splitlines()
        header, row = out[0].split(), out[1].split()
        assert row[header.index("PLAYERS")] == "2"
        assert udp(ip, port, "JOIN mallory wrong-password") == "DENIED"  # no join line: not counted
        # With players on, time passing stops nothing.
        rn_clock.advance(minutes=10)
        time.sleep(5)
        assert kube.status_of("GameServer", lgns, "saga")["phase"] == "Running"
        assert players(kube, lgns, "saga")["online"] == 2

        assert udp(ip, port, "LEAVE alice") == "BYE alice"
        got = wait_for("alice gone", lambda: (lambda p: p if p.get("online") == 1 else None)(
            players(kube, lgns, "saga")), 60)
        assert got["names"] == ["bob"], got
        assert udp(ip, port, "LEAVE bob") == "BYE bob"
        got = wait_for("nobody on", lambda: (lambda p: p if p.get("online") == 0 else None)(
            players(kube, lgns, "saga")), 60)
        assert got["names"] == [] and got.get("lastSeen"), got
        rn_clock.advance(minutes=6)
        g = wait_phase(kube, lgns, "saga", "Stopped", timeout=120)
        assert g["status"]["uptime"]["reason"] == "Idle"
        wait_event(kube, lgns, "saga", "AutoStop")
        print(f"\nlog players: first read {first_read:.1f}s after Running; 2 joins in status "
              f"after {seen:.1f}s (probe interval 5 s)")
    finally:
        rn_clock.reset()
        kube.delete("GameServer", lgns, "saga")
        wait_for("the server to go", lambda: kube.get("GameServer", lgns, "saga") is None, 120)
        kube.delete("Game", None, game)
