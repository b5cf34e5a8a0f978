"""The Game reconciler's pure half: the status a Game should have."""
from fixtures import game

from peon.operator.games import game_status

NOW, LATER = "2026-11-29T04:00:00Z", "2026-11-29T05:00:00Z"


def valid(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Valid")


def test_a_buildable_game_is_valid_for_its_generation():
    g = game()
    g["metadata"]["generation"] = 3
    s = game_status(g, {}, NOW)
    assert s["observedGeneration"] == 3
    assert valid(s)["status"] == "True" and valid(s)["observedGeneration"] == 3
    assert g["spec"]["image"] in valid(s)["message"]


def test_a_game_no_pod_can_be_built_from_names_the_field():
    g = game()
    g["spec"]["securityContext"] = {"runAsUser": "root"}
    v = valid(game_status(g, {}, NOW))
    assert (v["status"], v["reason"]) == ("False", "InvalidGame")
    assert "spec.securityContext.runAsUser" in v["message"] and "'root'" in v["message"]


def test_a_game_missing_what_the_schema_requires_is_a_message_not_a_crash():
    g = game()
    del g["spec"]["image"]
    v = valid(game_status(g, {}, NOW))
    assert v["status"] == "False" and "image" in v["message"]


def test_the_transition_time_moves_only_when_the_answer_does():
    g = game()
    first = game_status(g, {}, NOW)
    again = game_status(g, first, LATER)
    assert valid(again)["lastTransitionTime"] == NOW and again == first
    g["spec"]["command"] = "run.sh"
    broken = game_status(g, first, LATER)
    assert valid(broken)["lastTransitionTime"] == LATER
