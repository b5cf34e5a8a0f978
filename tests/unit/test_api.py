"""The PEON API's routes through aiohttp's test client over an in-memory cluster
(fake_kube.FakeKube): keys, status codes, and what each call writes."""
import asyncio
import copy
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fake_kube import FakeKube
from fixtures import game, gameserver
from peon.api import Api

KEY = "k" * 24


def cluster():
    kube = FakeKube()
    for name in ("valheim", "minecraft"):
        kube.objects[("Game", None, name)] = game(name)
    git = gameserver()  # applied from Git: not the API's
    git["metadata"].update(name="odin", generation=3, resourceVersion="1")
    kube.objects[("GameServer", "games", "odin")] = git
    return kube


def call(kube, *requests):
    """Runs (method, path, body, headers) requests; returns [(status, json or text)]."""
    async def go():
        async with TestClient(TestServer(Api(kube, "games", KEY).app())) as client:
            out = []
            for method, path, body, headers in requests:
                resp = await client.request(method, path, headers={"X-Api-Key": KEY, **headers},
                                            data=body if isinstance(body, (str, bytes)) else
                                            (json.dumps(body) if body is not None else None))
                text = await resp.text()
                try:
                    out.append((resp.status, json.loads(text)))
                except ValueError:
                    out.append((resp.status, text))
            return out
    return asyncio.run(go())


def one(kube, method, path, body=None, headers=None):
    return call(kube, (method, path, body, headers or {}))[0]


def test_every_call_needs_the_key():
    kube = cluster()
    for headers in ({"X-Api-Key": ""}, {"X-Api-Key": "wrong"}, {"X-Api-Key": KEY[:-1]}):
        status, body = one(kube, "GET", "/api/v1/servers", headers=headers)
        assert status == 401 and body["status"] == "error"
    assert one(kube, "GET", "/api/v1/orchestrator")[1] == {"version": __import__("peon").__version__}
    with pytest.raises(ValueError):
        Api(kube, "games", "")


def test_create_makes_a_server_of_the_apis_with_its_password_in_a_secret():
    kube = cluster()
    status, obj = one(kube, "PUT", "/api/v1/server/create/valheim.vikings",
                      {"game_uid": "valheim", "warcamp": "vikings", "PASSWORD": "hunter22",
                       "description": "Friday nights"})
    assert status == 200 and obj["servername"] == "vikings" and obj["description"] == "Friday nights"
    gs = kube.objects[("GameServer", "games", "vikings")]
    assert gs["metadata"]["labels"]["app.kubernetes.io/created-by"] == "peon-api"
    assert "hunter22" not in json.dumps(gs)
    secret = kube.objects[("Secret", "games", "vikings-api-env")]
    assert secret["stringData"] == {"PASSWORD": "hunter22"}
    assert secret["metadata"]["ownerReferences"][0]["name"] == "vikings"
    again = one(kube, "PUT", "/api/v1/server/create/valheim.vikings", {"PASSWORD": "hunter22"})
    assert again == (409, {"status": "error", "info": "server [valheim.vikings] exists"})
    later = one(kube, "PUT", "/api/v1/server/create/valheim.later", {"PASSWORD": "x" * 8, "start_later": True})
    assert later[0] == 200 and "was not started" in later[1]["info"]
    assert one(kube, "GET", "/api/v1/servers")[1][0]["servername"] == "later"  # sorted


@pytest.mark.parametrize("method,path,body,status,info", [
    ("PUT", "/api/v1/server/create/valheim.vikings", "{nope", 400, "the body is not JSON"),
    ("PUT", "/api/v1/server/create/valheim.vikings", "[1]", 400, "must be a JSON object"),
    ("PUT", "/api/v1/server/create/valheim.Vikings", {"PASSWORD": "x"}, 400, "warcamp"),
    ("PUT", "/api/v1/server/create/valheim.vikings", {}, 400, "missing required variables"),
    ("PUT", "/api/v1/server/create/tetris.x", {}, 404, "plan [tetris] not found"),
    ("GET", "/api/v1/server/get/valheim.nobody", None, 404, "server [valheim.nobody] not found"),
    ("GET", "/api/v1/server/get/minecraft.odin", None, 404, "it is valheim.odin"),
    ("GET", "/api/v1/plan/tetris", None, 404, "plan [tetris] not found"),
    ("PUT", "/api/v1/server/start/valheim.odin", {"interval": "forever"}, 400, "interval"),
    ("PUT", "/api/v1/server/update/valheim.odin", {"mode": "reinit"}, 400, "wipe the world"),
    ("DELETE", "/api/v1/server/destroy/valheim.odin", None, 409, "delete it there"),
    ("PUT", "/api/v1/server/description/valheim.odin", {"description": 5}, 400, "a string is required"),
])
def test_bad_requests_get_their_status_and_a_message(method, path, body, status, info):
    got = one(cluster(), method, path, body)
    assert got[0] == status and info in got[1]["info"], got


def test_an_unknown_action_is_a_404_with_peons_message():
    assert one(cluster(), "PUT", "/api/v1/server/explode/valheim.odin") == (
        404, {"error": "Incorrect action [explode] provided"})
    assert one(cluster(), "GET", "/api/v1/nothing")[0] == 404


def test_a_git_owned_server_is_started_and_stopped_without_touching_its_spec():
    kube = cluster()
    spec = copy.deepcopy(kube.objects[("GameServer", "games", "odin")]["spec"])
    status, obj = one(kube, "PUT", "/api/v1/server/start/valheim.odin", {"interval": "5h"})
    assert status == 200 and obj["time"] is not None
    ann = kube.objects[("GameServer", "games", "odin")]["metadata"]["annotations"]
    assert ann["peon.dev/wake"] and ann["peon.dev/sleep"] > ann["peon.dev/wake"]
    one(kube, "PUT", "/api/v1/server/stop/valheim.odin", {})
    one(kube, "PUT", "/api/v1/server/restart/valheim.odin")
    one(kube, "PUT", "/api/v1/server/description/valheim.odin", {"description": "new"})
    gs = kube.objects[("GameServer", "games", "odin")]
    assert gs["spec"] == spec  # never written: Argo CD and Flux see no drift
    assert gs["metadata"]["annotations"]["peon.dev/restartedAt"]
    assert one(kube, "GET", "/api/v1/server/get/valheim.odin")[1]["description"] == "new"
    assert {v for v, k, _ in kube.calls if k == "GameServer"} <= {"get", "patch"}


def test_save_makes_a_backup_and_the_seed_api_creates_from_the_payload():
    kube = cluster()
    status, res = one(kube, "PUT", "/api/v1/server/save/valheim.odin")
    assert status == 200 and res["status"] == "success"
    run = kube.objects[("GameServerBackup", "games", res["info"])]
    assert run["spec"] == {"gameServer": "odin", "reason": "Manual"}
    payload = json.loads((__import__("fixtures").ROOT / "examples" / "peon-payload.json").read_text())
    status, res = one(kube, "POST", "/api/1.0/servers", payload)
    assert status == 200 and res["server"]["game_uid"] == payload["game_uid"]
    assert one(kube, "POST", "/api/1.0/servers", payload)[0] == 409
    assert one(kube, "POST", "/api/1.0/servers", {"game_uid": "valheim"})[0] == 400
    assert len(one(kube, "GET", "/api/1.0/servers")[1]["servers"]) == 2
    assert one(kube, "GET", "/openapi.json", headers={"X-Api-Key": ""})[1]["openapi"].startswith("3.")


def test_no_input_makes_a_500():
    """Fuzzed paths and bodies get a 2xx or 4xx with a message, never a 500."""
    from hypothesis import given, settings, strategies as st
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=30))
    bodies = st.one_of(st.binary(max_size=60), st.dictionaries(
        st.sampled_from(["PASSWORD", "description", "interval", "epoch_time", "start_later",
                         "mode", "eradicate", "warcamp", "game_uid", "bad key", "WORLD_NAME"]),
        st.one_of(scalar, st.lists(scalar, max_size=2), st.dictionaries(st.text(max_size=5), scalar,
                                                                        max_size=2)), max_size=5))
    actions_ = st.sampled_from(["get", "stats", "create", "start", "stop", "restart", "update",
                                "description", "save", "destroy", "eradicate", "nope", ""])
    uids = st.one_of(st.sampled_from(["valheim.odin", "valheim.new", "minecraft.odin", "valheim",
                                      "x.y.z", "valheim.Odin", ".", "valheim.a%2Fb"]),
                     st.text(alphabet="abc.-_%", max_size=12))
    methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"])

    @settings(max_examples=120, deadline=None)
    @given(methods, actions_, uids, bodies)
    def check(method, action, uid, body):
        status, answer = one(cluster(), method, f"/api/v1/server/{action}/{uid}",
                             body if isinstance(body, bytes) else json.dumps(body))
        assert status < 500, (method, action, uid, body, answer)
    check()


def test_save_get_streams_the_newest_good_backup_of_that_server(monkeypatch):
    from peon import download
    kube = cluster()
    for name, server, phase, done in (("old", "odin", "Succeeded", "2026-11-28T10:00:00Z"),
                                      ("new", "odin", "Succeeded", "2026-11-29T10:00:00Z"),
                                      ("failed", "odin", "Failed", "2026-11-29T11:00:00Z"),
                                      ("other", "thor", "Succeeded", "2026-11-29T12:00:00Z")):
        kube.objects[("GameServerBackup", "games", name)] = {
            "apiVersion": "peon.dev/v1alpha1", "kind": "GameServerBackup",
            "metadata": {"name": name, "namespace": "games"},  # no label: made by hand
            "spec": {"gameServer": server}, "status": {"phase": phase, "completionTime": done}}
    asked = []

    def fake_download(kube_, ns, name, out, image, **kw):
        asked.append(name)
        data = b"archive of " + name.encode()
        with open(out, "wb") as f:
            f.write(data)
        return download.Downloaded(out, len(data), "ab" * 32)
    monkeypatch.setattr(download, "download", fake_download)
    status, body = one(kube, "GET", "/api/v1/server/save/valheim.odin")
    assert (status, body, asked) == (200, "archive of new", ["new"])
    kube.objects.pop(("GameServerBackup", "games", "new"))
    kube.objects.pop(("GameServerBackup", "games", "old"))
    assert one(kube, "GET", "/api/v1/server/save/valheim.odin")[0] == 404


def test_a_wrong_method_is_said_and_the_apis_own_stopped_server_starts_in_one_write():
    kube = cluster()
    assert one(kube, "GET", "/api/v1/server/start/valheim.odin") == (
        405, {"status": "error", "info": "start takes PUT, not GET"})
    one(kube, "PUT", "/api/v1/server/create/valheim.mine", {"PASSWORD": "hunter22"})
    kube.objects[("GameServer", "games", "mine")]["spec"]["state"] = "Stopped"
    kube.calls.clear()
    assert one(kube, "PUT", "/api/v1/server/start/valheim.mine", {})[0] == 200
    gs = kube.objects[("GameServer", "games", "mine")]
    assert gs["spec"]["state"] == "Running" and gs["metadata"]["annotations"]["peon.dev/wake"]
    assert [c for c in kube.calls if c[0] == "patch"] == [("patch", "GameServer", "mine")]
    # A Git-owned server stopped by its spec is not started behind Git's back.
    kube.objects[("GameServer", "games", "odin")]["spec"]["state"] = "Stopped"
    status, body = one(kube, "PUT", "/api/v1/server/start/valheim.odin", {})
    assert status == 409 and "start it there" in body["info"]
    assert kube.objects[("GameServer", "games", "odin")]["spec"]["state"] == "Stopped"
