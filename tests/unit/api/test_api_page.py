"""The web page's routes and friends' keys through aiohttp's test client over the in-memory
cluster: the page is served with a strict CSP, keys name friends whose role decides what they
may do, every write is an Event naming the friend, and PEON's web UI's logs and create."""
import asyncio
import json
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer

from test_api import KEY, cluster
from peon.api import keys
from peon.api.server import Api

FRIENDS = {"viewer": "v" * 20, "player": "p" * 20, "admin2": "a" * 20, "limited": "l" * 20}
KEYS_YAML = f"""
viewer: {{key: {FRIENDS['viewer']}, role: viewer}}
player: {{key: {FRIENDS['player']}, role: player}}
admin2: {{key: {FRIENDS['admin2']}, role: admin}}
limited: {{key: {FRIENDS['limited']}, role: admin, servers: [vikings]}}
"""


def succeeded_backup(kube, name, server="odin", when="2026-01-01T10:00:00Z"):
    kube.objects[("GameServerBackup", "games", name)] = {
        "apiVersion": "peon.dev/v1alpha1", "kind": "GameServerBackup",
        "metadata": {"name": name, "namespace": "games", "creationTimestamp": when},
        "spec": {"gameServer": server, "reason": "Manual"},
        "status": {"phase": "Succeeded", "completionTime": when, "size": 1234}}


def server_pod(kube, server="odin"):
    kube.objects[("Pod", "games", f"{server}-abc")] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{server}-abc", "namespace": "games", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"peon.dev/gameserver": server}}, "status": {"phase": "Running"}}


class Session:
    """One API over one cluster; requests as (method, path, key, body, headers)."""

    def __init__(self, kube, tmp_path, **kw):
        path = tmp_path / "keys.yaml"
        path.write_text(KEYS_YAML)
        self.kube, self.keys_path, self.logs = kube, path, []

        def read_log(namespace, pod, lines):
            self.logs.append((pod, lines))
            return "line one\n<b>line two</b>\n"
        self.api = Api(kube, "games", KEY, keys_file=str(path), read_log=read_log, **kw)

    def run(self, *requests):
        async def go():
            async with TestClient(TestServer(self.api.app())) as client:
                out = []
                for method, path, key, body, headers in requests:
                    h = dict(headers or {})
                    if key is not None:
                        h["X-Api-Key"] = key
                    resp = await client.request(method, path, headers=h,
                                                data=None if body is None else json.dumps(body))
                    raw = await resp.read()
                    try:
                        data = json.loads(raw)
                    except ValueError:
                        data = raw
                    out.append((resp.status, data, resp.headers))
                return out
        return asyncio.run(go())

    def one(self, method, path, key=KEY, body=None, headers=None):
        return self.run((method, path, key, body, headers))[0]


@pytest.fixture
def s(tmp_path):
    return Session(cluster(), tmp_path)


def test_the_page_is_served_without_a_key_with_a_strict_csp(s):
    for path, kind in (("/", "text/html"), ("/page/app.js", "text/javascript"),
                       ("/page/app.css", "text/css")):
        status, body, headers = s.one("GET", path, key=None)
        assert status == 200 and headers["Content-Type"].startswith(kind), (path, headers)
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe" not in csp and headers["X-Content-Type-Options"] == "nosniff"
    page = s.one("GET", "/", key=None)[1].decode()
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP allows none
    js = s.one("GET", "/page/app.js", key=None)[1].decode()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js
    status, _, headers = s.one("GET", "/", key=None, headers={"If-None-Match": headers["ETag"]})
    assert status == 200  # the ETag above was app.css's
    tag = s.one("GET", "/", key=None)[2]["ETag"]
    assert s.one("GET", "/", key=None, headers={"If-None-Match": tag})[0] == 304


def test_a_wrong_key_shows_nothing_and_is_rate_limited(s):
    status, body, _ = s.one("GET", "/page/servers", key="w" * 20)
    assert status == 401 and "not known" in body["info"] and "servers" not in body
    got = s.run(*[("GET", "/page/servers", "w" * 20 + str(i), None, None) for i in range(12)])
    assert [g[0] for g in got][:9] == [401] * 9 and got[-1][0] == 429
    assert "too many wrong keys" in got[-1][1]["info"] and int(got[-1][2]["Retry-After"]) > 0
    assert s.one("GET", "/page/servers")[0] == 429  # the right key waits too: no more guesses
    # A request without a key is not a guess.
    fresh = Session(cluster(), s.keys_path.parent)
    assert [fresh.one("GET", "/page/servers", key=None)[0] for _ in range(12)][-1] == 401


def test_the_board_lists_servers_by_key_with_what_each_may_do(s):
    s.kube.objects[("GameServer", "games", "odin")]["status"] = {
        "phase": "Running", "endpoint": "203.0.113.5:2456", "players": {"online": 2, "max": 10},
        "backup": {"lastSuccessfulTime": "2026-01-01T10:00:00Z"}}
    status, board, headers = s.one("GET", "/page/servers", key=FRIENDS["viewer"])
    assert status == 200 and board["friend"] == {"name": "viewer", "role": "viewer"}
    [card] = board["servers"]
    assert card["uid"] == "valheim.odin" and card["address"] == "203.0.113.5:2456"
    assert card["players"] == 2 and card["max_players"] == 10 and card["phase"] == "Running"
    assert card["last_backup"] == "2026-01-01T10:00:00Z" and headers["X-Peon-Now"]
    assert not any(card["can"].values())
    can = s.one("GET", "/page/servers", key=FRIENDS["player"])[1]["servers"][0]["can"]
    assert can == {"start": False, "extend": True, "stop": True, "backup": False,
                   "restore": False, "logs": False, "download": False}
    assert all(v for k, v in s.one("GET", "/page/servers")[1]["servers"][0]["can"].items()
               if k != "start")
    assert s.one("GET", "/page/servers", key=FRIENDS["limited"])[1]["servers"] == []
    assert s.one("GET", "/api/v1/servers", key=FRIENDS["limited"])[1] == []
    assert s.one("GET", "/api/v1/server/get/valheim.odin", key=FRIENDS["limited"])[0] == 404
    # Unchanged: a 304 of no body.
    assert s.one("GET", "/page/servers", key=FRIENDS["viewer"],
                 headers={"If-None-Match": headers["ETag"]})[0] == 304


def test_roles_decide_and_every_write_is_an_event_naming_the_friend(s):
    kube = s.kube
    kube.objects[("GameServer", "games", "odin")]["status"] = {"phase": "Running"}
    status, body, _ = s.one("POST", "/page/stop/valheim.odin", key=FRIENDS["viewer"])
    assert status == 403 and "viewer key" in body["info"]
    assert "peon.dev/sleep" not in (kube.objects[("GameServer", "games", "odin")]["metadata"]
                                    .get("annotations") or {})
    status, body, _ = s.one("POST", "/page/stop/valheim.odin", key=FRIENDS["player"])
    assert status == 200 and body["server"]["uid"] == "valheim.odin"
    assert kube.objects[("GameServer", "games", "odin")]["metadata"]["annotations"]["peon.dev/sleep"]
    assert kube.events[-1] == ("Normal", "ApiStop",
                               "player (player) stopped the server through peon-api")
    succeeded_backup(kube, "odin-b1")
    status, body, _ = s.one("POST", "/page/restore/valheim.odin", key=FRIENDS["player"],
                            body={"backup": "odin-b1"})
    assert status == 403 and "an admin's" in body["info"]
    assert not [k for k in kube.objects if k[0] == "GameServerRestore"]
    status, body, _ = s.one("POST", "/page/restore/valheim.odin", key=FRIENDS["admin2"],
                            body={"backup": "odin-b1"})
    assert status == 200
    [restore] = [o for k, o in kube.objects.items() if k[0] == "GameServerRestore"]
    assert restore["spec"] == {"gameServer": "odin", "backup": "odin-b1"}
    assert kube.events[-1][1] == "ApiRestore" and "admin2 (admin)" in kube.events[-1][2]
    assert s.one("POST", "/page/restore/valheim.odin", key=FRIENDS["admin2"],
                 body={"backup": "nope"})[0] == 404
    # The API's own key is an admin's, named admin; the PEON routes record too.
    assert s.one("PUT", "/api/v1/server/start/valheim.odin", body={"interval": "1h"})[0] == 200
    assert kube.events[-1][1] == "ApiStart" and kube.events[-1][2].startswith("admin (admin) started")
    assert "interval 1h" in kube.events[-1][2]


def test_start_and_extend_for_hours(s):
    kube = s.kube
    gs = kube.objects[("GameServer", "games", "odin")]
    gs["status"] = {"phase": "Stopped"}
    assert s.one("POST", "/page/extend/valheim.odin", key=FRIENDS["player"],
                 body={"hours": 2})[0] == 409  # nothing to extend
    status, body, _ = s.one("POST", "/page/start/valheim.odin", key=FRIENDS["player"],
                            body={"hours": 3})
    assert status == 200 and 3 * 3600 - 5 < body["server"]["seconds_left"] <= 3 * 3600
    kube.objects[("GameServer", "games", "odin")]["status"] = {"phase": "Running"}
    status, body, _ = s.one("POST", "/page/extend/valheim.odin", key=FRIENDS["player"],
                            body={"hours": 2})
    assert status == 200 and 5 * 3600 - 5 < body["server"]["seconds_left"] <= 5 * 3600
    assert "extended the session (hours 2, until" in kube.events[-1][2]
    for bad in ({"hours": 0}, {"hours": 1000}, {"hours": "x"}, {"hours": True}, {"hours": [1]}):
        assert s.one("POST", "/page/start/valheim.odin", body=bad)[0] == 400, bad


def test_backups_list_and_the_logs_routes(s):
    kube = s.kube
    succeeded_backup(kube, "odin-old", when="2026-01-01T10:00:00Z")
    succeeded_backup(kube, "odin-new", when="2026-01-02T10:00:00Z")
    succeeded_backup(kube, "other-1", server="other")
    status, body, _ = s.one("GET", "/page/backups/valheim.odin")
    assert [b["name"] for b in body["backups"]] == ["odin-new", "odin-old"]
    assert s.one("GET", "/page/backups/valheim.odin", key=FRIENDS["player"])[0] == 403
    status, body, _ = s.one("POST", "/page/backup/valheim.odin")
    assert status == 200 and ("GameServerBackup", "games", body["info"]) in kube.objects
    # PEON's web UI's console: GET /api/v1/server/logs/{uid}?lines=N.
    assert s.one("GET", "/api/v1/server/logs/valheim.odin?lines=5")[0] == 409  # no pod yet
    server_pod(kube)
    status, body, _ = s.one("GET", "/api/v1/server/logs/valheim.odin?lines=5")
    assert status == 200 and body["logs"].startswith("line one") and body["lines"] == 5
    assert s.logs[-1] == ("odin-abc", 5)
    assert s.one("GET", "/page/logs/valheim.odin?lines=50")[1]["log"].startswith("line one")
    for bad in ("0", "-1", "x", "99999999999", "2001"):
        assert s.one("GET", f"/api/v1/server/logs/valheim.odin?lines={bad}")[0] == 400, bad
    assert s.one("GET", "/api/v1/server/logs/valheim.odin", key=FRIENDS["player"])[0] == 403


def test_peons_web_ui_creates_with_a_post(s):
    kube = s.kube
    status, obj = s.one("POST", "/api/v1/server/create",
                        body={"game_uid": "valheim", "servername": "vikings", "PASSWORD": "hunter22"})[:2]
    assert status == 200 and obj["servername"] == "vikings" and obj["game_uid"] == "valheim"
    assert ("Secret", "games", "vikings-api-env") in kube.objects
    assert kube.events[-1][1] == "ApiCreate"
    for bad in ({"servername": "x"}, {"game_uid": 5}, {"game_uid": "a.b"},
                {"game_uid": "valheim", "servername": 7}):
        assert s.one("POST", "/api/v1/server/create", body=bad)[0] == 400, bad
    # A key limited to some servers creates only those.
    status, body = s.one("POST", "/api/v1/server/create", key=FRIENDS["limited"],
                         body={"game_uid": "valheim", "servername": "raiders", "PASSWORD": "x" * 8})[:2]
    assert status == 403 and "valheim.raiders" in body["info"]
    assert ("GameServer", "games", "raiders") not in kube.objects
    assert s.one("GET", "/api/v1/servers", key=FRIENDS["limited"])[1][0]["servername"] == "vikings"


def test_an_edited_keys_file_is_read_again_and_a_broken_one_keeps_the_last(s, caplog):
    assert s.one("GET", "/page/servers", key="n" * 20)[0] == 401
    s.keys_path.write_text(KEYS_YAML + f"newbie: {{key: {'n' * 20}, role: viewer}}\n")
    os.utime(s.keys_path, ns=(1, 10 ** 18))
    s.api.keys.checked = 0  # as a second later
    assert s.one("GET", "/page/servers", key="n" * 20)[0] == 200
    s.keys_path.write_text("newbie: {key: [")
    s.api.keys.checked = 0
    assert s.one("GET", "/page/servers", key="n" * 20)[0] == 200  # a half-saved edit: the last
    assert "not YAML" in caplog.text and "n" * 20 not in caplog.text
    s.keys_path.write_text(KEYS_YAML)  # newbie's key taken away: refused at once
    os.utime(s.keys_path, ns=(1, 2 * 10 ** 18))
    s.api.keys.checked = 0
    assert s.one("GET", "/page/servers", key="n" * 20)[0] == 401


def test_the_seed_create_keeps_peons_txt_file_name(s):
    """`server settings.v2.txt` stays the file the game reads: a plain setting name, and PEON's
    name through path in the Game's config folder."""
    status, res = s.one("POST", "/api/1.0/servers", body={
        "game_uid": "valheim", "servername": "named", "settings": [
            {"type": "txt", "name": "server settings.v2.txt", "content": "a=1"}]})[:2]
    assert status == 200, res
    [setting] = s.kube.objects[("GameServer", "games", "named")]["spec"]["settings"]
    assert setting == {"type": "txt", "name": "server_settings.v2.txt", "content": "a=1",
                       "path": "/config/peon/server settings.v2.txt"}


def test_a_log_the_kubelet_does_not_give_in_time_is_a_502(tmp_path):
    import urllib3
    kube = cluster()
    server_pod(kube)
    s = Session(kube, tmp_path)

    def slow(namespace, pod, lines):
        raise urllib3.exceptions.ReadTimeoutError(None, "/log", "read timed out")
    s.api.read_log = slow
    status, body, _ = s.one("GET", "/api/v1/server/logs/valheim.odin?lines=5")
    assert status == 502 and "did not come within 5 s" in body["info"], body
