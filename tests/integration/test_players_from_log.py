"""Players counted from a server's log (issue 25, item 6: a Game may name log lines for joins
and leaves where its query breaks), on the bed: what admission and the operator refuse of a
Game's log lines. (The real-node run of the test game counting its players from its
`testgame: player NAME joined/left` lines is not here yet: see the commit that added this.)

Its own namespaces (lg-*) and its own operator: the session's real-node operator keeps r-*."""
from __future__ import annotations

import pytest
import yaml

from conftest import Operator, fresh_namespace
from gs_helpers import apply_as_user, events_for
from kube_helpers import api_error, message, wait_for
from realnode_helpers import GAME_FILE, tg_server

pytestmark = pytest.mark.timeout(900)
LOG = {"join": r"player (?P<player>[A-Za-z0-9_-]+) joined",
       "leave": r"player (?P<player>[A-Za-z0-9_-]+) left"}


@pytest.fixture
def lgns(kube):
    yield from fresh_namespace(kube, "lg")


@pytest.fixture(scope="module")
def lg_operator(kubeconfig, crds, real_node, tmp_path_factory, rn_clock):
    with Operator.running(kubeconfig, tmp_path_factory.mktemp("lg-operator") / "operator.log",
                          ["--job-image", "peon.invalid/peon-operator:test", "--namespace", "lg-*"],
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
