"""What `kubectl peon status` and the API's server object say of a change that waits for an
empty server (status.maintenance, issue 28)."""
import datetime as dt

from fixtures import gameserver

from peon.api import views as api_views
from peon.cli import views

NOW = dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
HELD = {"phase": "Running", "endpoint": "10.0.0.5:2456", "players": {"online": 2, "max": 10},
        "maintenance": {"pending": "new settings", "reason": "PlayersOnline",
                        "message": "new settings waits: 2 players on; applied when they leave, "
                                   "or at the latest at the deadline",
                        "pendingSince": "2026-05-01T12:00:00Z", "deadline": "2026-05-01T18:00:00Z",
                        "console": "players cannot be warned: the Game declares no console",
                        "nextRestart": "2026-05-02T04:00:00Z"}}


def server(status):
    gs = gameserver()
    gs["metadata"]["creationTimestamp"] = "2026-04-01T00:00:00Z"
    gs["status"] = status
    return gs


def test_status_says_what_waits_why_until_when_and_whether_players_are_warned():
    out = views.status_text(server(HELD), [], NOW)
    assert "Waiting:       new settings waits: 2 players on; applied when they leave" in out
    assert "Applied by:    2026-05-01T18:00:00Z (in 5h30m) at the latest\n" in out
    assert "Warnings:      players cannot be warned: the Game declares no console\n" in out
    assert "Next restart:  2026-05-02T04:00:00Z" in out


def test_status_says_nothing_of_maintenance_when_nothing_waits():
    out = views.status_text(server({"phase": "Running"}), [], NOW)
    assert "Waiting" not in out and "Applied by" not in out and "Next restart" not in out


def test_the_api_server_object_says_what_waits_in_unix_seconds():
    conf = api_views.server_object(server(HELD), NOW)["server_config"]
    assert conf["pending_change"] == {
        "change": "new settings", "reason": "PlayersOnline",
        "message": HELD["maintenance"]["message"],
        "until": int(dt.datetime(2026, 5, 1, 18, tzinfo=dt.timezone.utc).timestamp())}
    assert conf["warnings"].startswith("players cannot be warned")
    assert conf["next_restart"] == int(dt.datetime(2026, 5, 2, 4, tzinfo=dt.timezone.utc).timestamp())
    assert "pending_change" not in api_views.server_object(server({"phase": "Running"}), NOW)["server_config"]


def test_status_says_when_the_image_was_last_pulled_again_and_the_next_update():
    m = {"lastUpdate": "2026-05-01T12:01:00Z", "updatedAt": "2026-05-01T12:07:00Z",
         "nextUpdate": "2026-05-04T03:00:00Z"}
    out = views.status_text(server({"phase": "Running", "maintenance": m}), [], NOW)
    assert "Updated:       2026-05-01T12:07:00Z (23m ago)\n" in out
    assert "Next update:   2026-05-04T03:00:00Z (in 2d" in out
