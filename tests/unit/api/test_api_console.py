"""The admin's console route (POST /api/v1/server/console/{uid}, issue 28 item 5) through the
API's test client, against the test game's real Source RCON console on loopback: the command
reaches the game and its answer comes back; the password is in no answer nor log; a wrong
password, a player's key, a bad command, a Game without console, a stopped server and an
account without Secret reads are each said."""
import asyncio
import base64
import json
import logging
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes.client.rest import ApiException

from test_api import KEY, cluster
from test_testgame import games  # noqa: F401  (the fixture)

from peon.api import console as api_console
from peon.api.server import Api

PASSWORD = "correct horse battery"
PATH = "/api/v1/server/console/valheim.odin"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bed(games, monkeypatch):  # noqa: F811
    port = free_tcp_port()
    game = games(RCON_PORT=str(port), RCON_PASSWORD=PASSWORD).start()
    kube = cluster()
    g = kube.objects[("Game", None, "valheim")]
    g["spec"]["ports"].append({"name": "rcon", "containerPort": port, "protocol": "TCP"})
    g["spec"]["console"] = {"protocol": "rcon", "port": "rcon", "passwordKey": "RCON_PASSWORD"}
    gs = kube.objects[("GameServer", "games", "odin")]
    gs["status"] = {"phase": "Running"}
    set_password(kube, PASSWORD)
    hosts = []
    kube.objects[("Service", "games", "odin")] = {
        "kind": "Service", "metadata": {"name": "odin", "namespace": "games"},
        "spec": {"clusterIP": "10.96.0.42"}}
    real_host = api_console.service_host
    # The game listens on loopback here: the cluster IP read from the Service is recorded.
    monkeypatch.setattr(api_console, "service_host",
                        lambda svc: hosts.append(real_host(svc)) or "127.0.0.1")
    return kube, game, hosts


def set_password(kube, password):
    kube.objects[("Secret", "games", "odin-env")] = {
        "kind": "Secret", "metadata": {"name": "odin-env", "namespace": "games"},
        "data": {"RCON_PASSWORD": base64.b64encode(password.encode()).decode()}}


def post(kube, body, key=KEY, friends=None):
    async def go():
        api = Api(kube, "games", KEY)
        async with TestClient(TestServer(api.app())) as client:
            resp = await client.post(PATH, headers={"X-Api-Key": key},
                                     data=json.dumps(body) if not isinstance(body, str) else body)
            text = await resp.text()
            return resp.status, json.loads(text)
    return asyncio.run(go())


def test_one_command_reaches_the_game_and_its_answer_comes_back(bed, caplog):
    kube, game, hosts = bed
    caplog.set_level(logging.DEBUG)
    status, res = post(kube, {"command": "say Restarting soon"})
    assert status == 200 and res["answer"] == "say Restarting soon"
    assert [c["command"] for c in game.report()["console"]] == ["say Restarting soon"]
    assert hosts == ["10.96.0.42"]  # the server's Service's cluster IP
    status, res = post(kube, {"command": "players"})
    assert status == 200 and res["answer"].startswith("players (0/10)")
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(res)
    # Who did it is said on the server; the command itself is not (it may hold a secret).
    said = [e[2] for e in kube.events if "console command" in e[2]]
    assert len(said) == 2 and not any("Restarting" in m for m in said)


def test_a_wrong_password_is_said_and_never_shown(bed, caplog):
    kube, game, _ = bed
    set_password(kube, "hunter22")
    status, res = post(kube, {"command": "say hi"})
    assert status == 502 and "refused the password" in res["info"]
    assert "hunter22" not in json.dumps(res) and "hunter22" not in caplog.text
    assert not game.report().get("console")


@pytest.mark.parametrize("body, code, says", [
    ({}, 400, "command: the console command"),
    ({"command": "say hi\nstop"}, 400, "one line"),
    ({"command": "x" * 1001}, 400, "at most 1000"),
    ("{nope", 400, "JSON"),
])
def test_a_bad_command_is_refused_before_the_console(bed, body, code, says):
    kube, game, hosts = bed
    status, res = post(kube, body)
    assert status == code and says in res["info"]
    assert not hosts and not game.report().get("console")


def test_what_the_api_cannot_do_is_said(bed, monkeypatch):
    kube, game, hosts = bed
    gs = kube.objects[("GameServer", "games", "odin")]
    gs["status"] = {"phase": "Stopped"}
    assert post(kube, {"command": "say hi"})[0] == 409
    gs["status"] = {"phase": "Running"}
    real_get = kube.get

    def no_secrets(kind, ns, name, *a, **kw):
        if kind == "Secret":
            raise ApiException(status=403, reason="Forbidden")
        return real_get(kind, ns, name, *a, **kw)
    monkeypatch.setattr(kube, "get", no_secrets)
    status, res = post(kube, {"command": "say hi"})
    assert status == 403 and "api.console: true" in res["info"]
    monkeypatch.setattr(kube, "get", real_get)
    del kube.objects[("Game", None, "valheim")]["spec"]["console"]
    status, res = post(kube, {"command": "say hi"})
    assert status == 409 and "declares no console" in res["info"]
    assert not game.report().get("console")


def test_the_console_is_reached_at_the_services_cluster_ip_and_never_without_one():
    assert api_console.service_host({"spec": {"clusterIP": "10.96.0.42"}}) == "10.96.0.42"
    assert api_console.service_host({"spec": {"clusterIP": "None"}}) is None  # headless
    assert api_console.service_host(None) is None


def test_only_an_admins_key_runs_a_console_command():
    from peon.api import keys
    assert keys.needed_role("POST", PATH) == keys.ADMIN
