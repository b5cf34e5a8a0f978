"""The server object shows the last update applied (issue 28, item 4): a field added to PEON's
v1 object (the contract: add, never break); the 1.0 object stays PEON's."""
import datetime as dt

from fixtures import gameserver
from peon.api import views

NOW = dt.datetime(2026, 11, 29, 18, 0, tzinfo=dt.timezone.utc)


def with_maintenance(**m):
    gs = gameserver()
    gs["status"] = {"phase": "Running", "maintenance": m}
    return gs


def test_the_last_update_is_its_image_and_when_it_was_asked_and_applied():
    obj = views.server_object(with_maintenance(
        lastUpdate="2026-11-29T12:01:00Z", updatedAt="2026-11-29T12:07:00Z",
        updatedImage="ghcr.io/lloesche/valheim-server:latest"), NOW)
    assert obj["last_update"] == {
        "image": "ghcr.io/lloesche/valheim-server:latest",
        "asked": int(dt.datetime(2026, 11, 29, 12, 1, tzinfo=dt.timezone.utc).timestamp()),
        "applied": int(dt.datetime(2026, 11, 29, 12, 7, tzinfo=dt.timezone.utc).timestamp())}


def test_no_update_yet_is_null_and_a_lost_apply_time_is_null_not_invented():
    assert views.server_object(with_maintenance(), NOW)["last_update"] is None
    assert views.server_object(gameserver(), NOW)["last_update"] is None
    obj = views.server_object(with_maintenance(lastUpdate="2026-11-29T12:01:00Z"), NOW)
    assert obj["last_update"]["applied"] is None and obj["last_update"]["image"] is None


def test_peons_fields_are_all_still_there_and_the_1_0_object_is_unchanged():
    gs = with_maintenance(lastUpdate="2026-11-29T12:01:00Z")
    v1 = views.server_object(gs, NOW)
    assert {"game_uid", "servername", "container_type", "build_version", "container_state",
            "server_state", "server_config", "description", "time"} < set(v1)
    assert set(views.server_object_1_0(gs, NOW)) == {
        "game_uid", "servername", "container_state", "server_state", "server_config",
        "description", "time"}
