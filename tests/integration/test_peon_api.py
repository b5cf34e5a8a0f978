"""The PEON API on the bed, called the way PEON's Discord bot calls it (X-Api-Key, JSON bodies,
a 10 s timeout on every call): create, list, start with an interval, stop, update, save,
description, plans and destroy; the seed's payload POSTed to /api/1.0; a GameServer applied from
Git started and stopped through the API with its spec and generation unchanged."""
from __future__ import annotations

import base64
import json
import pathlib
import time

import pytest

from api_helpers import PeonApi
from gs_helpers import apply_as_user, gameserver, run_phase, wait_phase
from kube_helpers import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def api(kubeconfig, namespace, clock, tmp_path):
    a = PeonApi(kubeconfig, namespace, clock.path, tmp_path / "peon-api.log")
    yield a
    log = a.stop()
    assert "Traceback" not in log, log[-3000:]


def server_state(api, uid):
    return api.call("GET", f"/api/v1/server/get/{uid}")[1].get("server_state")


def test_the_discord_bots_calls_drive_a_server_from_create_to_destroy(api, kube, namespace):
    assert api.call("GET", "/api/v1/orchestrator", key="wrong")[0] == 401
    assert api.call("GET", "/api/v1/orchestrator", key="")[0] == 401
    plans = api.call("GET", "/api/v1/plans")[1]
    assert {"valheim", "minecraft"} <= {p["game_uid"] for p in plans}
    plan = api.call("GET", "/api/v1/plan/valheim")[1]
    assert plan["SERVER_PASS"] == "" and "description" in plan

    body = {"game_uid": "valheim", "warcamp": "vikings", "SERVER_NAME": "Vikings",
            "WORLD_NAME": "Midgard", "PASSWORD": "hunter22", "description": "Friday nights"}
    status, obj = api.call("PUT", "/api/v1/server/create/valheim.vikings", body)
    assert status == 200 and obj["servername"] == "vikings", obj
    assert "hunter22" not in json.dumps(kube.get("GameServer", namespace, "vikings"))
    wait_for("STARTED", lambda: server_state(api, "valheim.vikings") == "STARTED", 60)
    listed = api.call("GET", "/api/v1/servers")[1]
    assert [s["servername"] for s in listed] == ["vikings"]
    assert "hunter22" not in json.dumps(listed)
    secret = kube.get("Secret", namespace, "vikings-api-env")
    assert base64.b64decode(secret["data"]["PASSWORD"]).decode() == "hunter22"
    container = kube.get("Deployment", namespace, "vikings")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "vikings-api-env"}} in container["envFrom"]  # what it runs with
    assert {"name": "SERVER_PASS", "value": "$(PASSWORD)"} in container["env"]  # PEON's name mapped
    assert api.call("PUT", "/api/v1/server/create/valheim.vikings", body)[0] == 409

    # start with an interval: the stop is scheduled, and the server object says when.
    status, obj = api.call("PUT", "/api/v1/server/start/valheim.vikings", {"interval": "5h"})
    assert status == 200 and obj["time"] and obj["time"] > time.time() + 4 * 3600
    status, obj = api.call("PUT", "/api/v1/server/stop/valheim.vikings", {})
    wait_for("OFFLINE", lambda: server_state(api, "valheim.vikings") == "OFFLINE", 60)
    assert kube.get("GameServer", namespace, "vikings")["status"]["uptime"]["reason"] == "StopRequested"
    api.call("PUT", "/api/v1/server/start/valheim.vikings", {})
    wait_for("STARTED again", lambda: server_state(api, "valheim.vikings") == "STARTED", 60)

    status, obj = api.call("PUT", "/api/v1/server/description/valheim.vikings", {"description": "Saturdays"})
    assert status == 200 and obj["description"] == "Saturdays"
    assert api.call("PUT", "/api/v1/server/update/valheim.vikings", {})[0] == 200
    # an update asks for the image pulled again (issue 28), not a plain restart
    assert kube.get("GameServer", namespace, "vikings")["metadata"]["annotations"]["peon.dev/update"]
    status, saved = api.call("PUT", "/api/v1/server/save/valheim.vikings")
    assert status == 200
    run_phase(kube, "GameServerBackup", namespace, saved["info"], "Succeeded", timeout=90)

    # Bad input: its status code and a message, never a 500.
    for method, path, body_, code in (
            ("PUT", "/api/v1/server/create/valheim.x", b"{not json", 400),
            ("PUT", "/api/v1/server/create/valheim.Bad", {"PASSWORD": "x"}, 400),
            ("PUT", "/api/v1/server/create/nosuchgame.x", {}, 404),
            ("GET", "/api/v1/server/get/valheim.nobody", None, 404),
            ("PUT", "/api/v1/server/start/valheim.vikings", {"epoch_time": "12"}, 400),
            ("PUT", "/api/v1/server/fly/valheim.vikings", {}, 404)):
        got, answer = api.call(method, path, body_)
        assert got == code and answer, (path, got, answer)

    status, res = api.call("DELETE", "/api/v1/server/destroy/valheim.vikings", {})
    assert status == 200 and "world is kept" in res["info"]
    wait_for("the server to go", lambda: kube.get("GameServer", namespace, "vikings") is None, 60)
    assert kube.get("PersistentVolumeClaim", namespace, "vikings-data") is not None
    assert api.slowest < 10


def test_a_git_owned_server_keeps_its_spec_and_generation(api, kube, namespace):
    apply_as_user(kube, gameserver("odin", namespace))
    wait_phase(kube, namespace, "odin", "Running")
    before = kube.get("GameServer", namespace, "odin")
    assert api.call("PUT", "/api/v1/server/stop/valheim.odin", {})[0] == 200
    wait_phase(kube, namespace, "odin", "Stopped")
    assert api.call("PUT", "/api/v1/server/start/valheim.odin", {"interval": "2h"})[0] == 200
    wait_phase(kube, namespace, "odin", "Running")
    assert api.call("PUT", "/api/v1/server/description/valheim.odin", {"description": "x"})[0] == 200
    after = kube.get("GameServer", namespace, "odin")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    status, res = api.call("DELETE", "/api/v1/server/destroy/valheim.odin", {})
    assert status == 409 and "delete it there" in res["info"]


def test_the_seed_payload_posted_to_the_seed_api_runs(api, kube, namespace):
    payload = json.loads((ROOT / "examples" / "peon-payload.json").read_text())
    status, res = api.call("POST", "/api/1.0/servers", payload)
    assert status == 200, res
    name = res["server"]["servername"]
    wait_phase(kube, namespace, name, "Running")
    got = api.call("GET", f"/api/1.0/server/get/{payload['game_uid']}.{name}")[1]
    assert got["server"]["server_state"] == "STARTED"
    assert api.call("POST", "/api/1.0/servers", payload)[0] == 409
    assert api.call("POST", "/api/1.0/servers", {"servername": "x"})[0] == 400


def test_a_secret_the_api_did_not_make_keeps_its_data_and_the_create_is_a_409(api, kube, namespace):
    """Issue 23, item 1: a servername and a setting that spell an existing Secret's name (a
    store's keys, say) get a 409 naming it, for the seed's create and the bot's alike; the
    Secret keeps its data and labels, and no server is made."""
    def store_secret(name):
        kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": name, "namespace": namespace, "labels": {"team": "ops"}},
                     "stringData": {"RESTIC_PASSWORD": "the store's own"}})
        return kube.get("Secret", namespace, name)
    before = {n: store_secret(n) for n in ("offsite-s3", "vault-api-env")}
    status, res = api.call("POST", "/api/1.0/servers", {
        "game_uid": "valheim", "servername": "offsite",
        "settings": [{"type": "env", "name": "s3", "content": {"RESTIC_PASSWORD": "mine now"}}]})
    assert status == 409, res
    assert "Secret offsite-s3 exists and was not made by Peon's API" in res["info"], res
    status, res = api.call("PUT", "/api/v1/server/create/valheim.vault", {"PASSWORD": "hunter22"})
    assert status == 409 and "Secret vault-api-env exists and was not made by Peon's API" in res["info"], res
    for name, was in before.items():
        now = kube.get("Secret", namespace, name)
        assert now["data"] == was["data"] and now["metadata"]["labels"] == {"team": "ops"}, now
        assert now["metadata"]["resourceVersion"] == was["metadata"]["resourceVersion"]
    assert kube.get("GameServer", namespace, "offsite") is None
    assert kube.get("GameServer", namespace, "vault") is None
    # The API's own Secret of a refused server goes with the refusal; the user's stays.
    status, res = api.call("PUT", "/api/v1/server/create/valheim.wordy",
                           {"PASSWORD": "hunter22", "description": "x" * 2000})
    assert status == 400 and kube.get("Secret", namespace, "wordy-api-env") is None, res
