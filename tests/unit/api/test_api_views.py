"""The PEON API's pure half: PEON's shapes from GameServers and Games, and PEON's create bodies
as GameServers and Secrets."""
import datetime as dt
import json

import pytest

from fixtures import game, gameserver
from peon.api import views
from peon.shared.actions import BadRequest, parse_interval

NOW = dt.datetime(2026, 11, 29, 18, 0, tzinfo=dt.timezone.utc)


def with_status(gs, **status):
    gs["status"] = status
    return gs


@pytest.mark.parametrize("phase,container,server", [
    ("Running", "running", "STARTED"), ("Starting", "running", "INITIALIZING"),
    ("Pending", "created", "INITIALIZING"), ("Stopped", "exited", "OFFLINE"),
    ("Error", "dead", "ERROR"), (None, "created", "UNKNOWN")])
def test_the_server_object_says_the_phase_in_peons_words(phase, container, server):
    obj = views.server_object(with_status(gameserver(), **({"phase": phase} if phase else {})), NOW)
    assert (obj["container_state"], obj["server_state"]) == (container, server)
    assert obj["game_uid"] == "valheim" and obj["servername"] == "odin"


def test_a_running_server_tells_where_to_connect_and_who_is_on_but_no_password():
    gs = with_status(gameserver(description="Vikings"), phase="Running", endpoint="10.0.0.7:2456",
                     image="ghcr.io/lloesche/valheim-server:v2", players={"online": 2, "max": 10},
                     uptime={"running": True, "reason": "AlwaysOn", "message": "no uptime policy"})
    obj = views.server_object(gs, NOW)
    assert obj["server_config"] == {"state": "RUNNING", "address": "10.0.0.7", "port": 2456,
                                    "players": 2, "max_players": 10, "why": "no uptime policy"}
    assert obj["build_version"] == "v2" and obj["description"] == "Vikings" and obj["time"] is None
    assert "hunter22" not in json.dumps(obj)  # the password in settings never shows
    stopped = views.server_object(with_status(gameserver(), phase="Stopped"), NOW)
    assert stopped["server_config"] == {"state": "OFFLINE"}


def test_time_is_the_stop_asked_for_as_unix_seconds():
    gs = gameserver()
    gs["metadata"]["annotations"] = {"peon.dev/wake": "2026-11-29T18:00:00Z",
                                     "peon.dev/sleep": "2026-11-29T23:00:00Z"}
    assert views.server_object(gs, NOW)["time"] == int(dt.datetime(2026, 11, 29, 23, tzinfo=dt.timezone.utc).timestamp())


def test_plans_and_a_plan_from_the_catalogue():
    games = [game("valheim"), game("minecraft")]
    listed = views.plans(games)
    assert [p["game_uid"] for p in listed] == ["minecraft", "valheim"]  # by title
    assert listed[1]["plan_url"].startswith("https://")
    plan = views.plan(game("valheim"))
    assert plan["SERVER_PASS"] == "" and plan["SERVER_NAME"] == ""  # required; filled by Peon
    assert plan["WORLD_NAME"] == "Dedicated" and plan["SERVER_PUBLIC"] == "false"
    assert plan["description"] == "A Valheim game server for Peon."
    assert views.find_game(games, "valhiem")["metadata"]["name"] == "valheim"  # PEON's alias
    with pytest.raises(views.NotFound, match=r"plan \[nope\] not found"):
        views.find_game(games, "nope")


def test_a_create_puts_passwords_in_a_secret_and_the_rest_in_the_server():
    body = {"description": "Friday", "PASSWORD": "hunter22", "WORLD_NAME": "Midgard",
            "game_uid": "valheim", "warcamp": "vikings", "interval": "5h"}
    gs, secret = views.create_objects(game("valheim"), "vikings", body, "games", NOW)
    assert secret["stringData"] == {"PASSWORD": "hunter22"} and secret["metadata"]["name"] == "vikings-api-env"
    assert "hunter22" not in json.dumps(gs)
    assert gs["spec"]["settings"] == [
        {"type": "env", "name": "api", "content": {"WORLD_NAME": "Midgard"}},
        {"type": "env", "name": "api-secret", "secretRef": {"name": "vikings-api-env"}}]
    assert gs["metadata"]["labels"] == {views.CREATED_BY: "peon-api"}
    assert gs["metadata"]["annotations"] == {"peon.dev/wake": "2026-11-29T18:00:00Z",
                                             "peon.dev/sleep": "2026-11-29T23:00:00Z"}
    later, _ = views.create_objects(game("valheim"), "v2", {"PASSWORD": "x" * 8, "start_later": True},
                                    "games", NOW)
    assert later["metadata"]["annotations"] == {"peon.dev/sleep": "2026-11-29T18:00:00Z"}


@pytest.mark.parametrize("body,message", [
    ({}, r"missing required variables for valheim: SERVER_PASS \(or PASSWORD\)"),
    ({"PASSWORD": {"a": 1}}, "a variable's value is a string or a number"),
    ({"PASSWORD": "x", "bad name": "1"}, "'bad name' is not a variable name"),
    ({"PASSWORD": "x", "interval": "soon"}, "interval: 'soon' is not a duration"),
    ({"PASSWORD": "x", "epoch_time": "1600000000"}, "epoch_time: 1600000000 .* is not in the future"),
    ({"PASSWORD": "x", "description": 7}, "description: must be a string"),
])
def test_a_bad_create_body_names_the_field(body, message):
    with pytest.raises(BadRequest, match=message):
        views.create_objects(game("valheim"), "vikings", body, "games", NOW)


@pytest.mark.parametrize("warcamp", ["Vikings", "my.camp", "-x", "a" * 41, "ünï"])
def test_a_warcamp_that_cannot_name_objects_is_refused_with_a_hint(warcamp):
    with pytest.raises(BadRequest, match="warcamp"):
        views.check_warcamp(warcamp)
    assert views.check_warcamp("vikings-2") == "vikings-2"
    assert views.split_uid("valheim.vikings") == ("valheim", "vikings")
    assert views.split_uid("valheim") == ("valheim", None)


def test_peon_intervals_and_update_modes():
    assert parse_interval("5h") == dt.timedelta(hours=5)
    assert parse_interval("90") == dt.timedelta(minutes=90)  # a bare number is minutes
    assert parse_interval("2d") == dt.timedelta(days=2)
    for bad in ("0m", "-5h", "5 weeks", True, None, "400d"):
        with pytest.raises(BadRequest):
            parse_interval(bad)
    assert views.update_mode({}) == "full"
    with pytest.raises(BadRequest, match="reinit would wipe the world"):
        views.update_mode({"mode": "reinit"})
