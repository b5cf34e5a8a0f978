"""`kubectl peon rcon` and `kubectl peon console` (issue 28) against the test game's RCON
console (a real process on loopback); the port-forward is the only part stood in for: the
tests hand the command a socket connected to the game instead of one through the API server."""
import base64
import io
import socket

import pytest
import yaml

from fake_kube import FakeKube
from fixtures import ROOT
from test_testgame import games  # noqa: F401  (the fixture)

from peon.cli import console as cli_console
from peon.cli.context import Ctx
from peon.cli.main import run
from peon.shared.kube import ExecResult

PASSWORD = "correct horse battery"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(rcon_password=PASSWORD, console=True):
    kube = FakeKube()
    game = yaml.safe_load((ROOT / "tests/realnode/testgame/game.yaml").read_text())
    if not console:
        del game["spec"]["console"]
    kube.objects[("Game", None, game["metadata"]["name"])] = game
    gs = {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
          "metadata": {"name": "keep", "namespace": "games", "uid": "u-1", "generation": 1},
          "spec": {"gameUid": game["metadata"]["name"], "settings": [
              {"type": "env", "name": "env", "content": {"SERVER_PASS": "x"}}]}}
    kube.objects[("GameServer", "games", "keep")] = gs
    kube.objects[("Secret", "games", "keep-env")] = {"metadata": {"name": "keep-env"}, "data": {
        "SERVER_PASS": base64.b64encode(b"x").decode(),
        "RCON_PASSWORD": base64.b64encode(rcon_password.encode()).decode()}}
    kube.objects[("Pod", "games", "keep-abc")] = {
        "metadata": {"name": "keep-abc", "namespace": "games",
                     "labels": {"peon.dev/gameserver": "keep"}, "creationTimestamp": "2026-05-01T00:00:00Z"},
        "status": {"phase": "Running"}}
    return kube


@pytest.fixture
def game(games, monkeypatch):  # noqa: F811
    port = free_tcp_port()
    g = games(RCON_PORT=str(port), RCON_PASSWORD=PASSWORD).start()
    forwarded = []

    def forward(ctx, ns, pod, container_port):
        forwarded.append((ns, pod, container_port))
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        return None, s
    monkeypatch.setattr(cli_console, "port_forward", forward)
    g.forwarded = forwarded
    return g


def peon(kube, *argv, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        lines = iter(stdin)

        def read(prompt):
            try:
                return next(lines)
            except StopIteration:
                raise EOFError from None
        argv_ = list(argv)
        import argparse
        args = argparse.Namespace(name=argv_[1], namespace="games", all_namespaces=False)
        code = cli_console.cmd_console(args, Ctx(kube=kube, out=out, err=err), read=read)
        return code, out.getvalue(), err.getvalue()
    code = run(list(argv), Ctx(kube=kube, out=out, err=err))
    return code, out.getvalue(), err.getvalue()


def test_rcon_runs_one_command_in_the_game_through_a_forward_to_its_pod(game):
    code, out, err = peon(cluster(), "-n", "games", "rcon", "keep", "say", "hi there")
    assert (code, out, err) == (0, "say hi there\n", "")
    assert game.forwarded == [("games", "keep-abc", 27015)]  # the Game's rcon port, in the pod
    assert [c["command"] for c in game.report()["console"]] == ["say hi there"]


def test_a_wrong_password_is_said_and_never_shown(game):
    code, out, err = peon(cluster("hunter22"), "-n", "games", "rcon", "keep", "say hi")
    assert code == 1 and "refused the password" in err
    assert "hunter22" not in out + err and PASSWORD not in out + err
    assert game.report()["console"] == []


def test_console_reads_commands_until_exit(game):
    code, out, err = peon(cluster(), "console", "keep",
                          stdin=["players", "", "say one", "nonsense", "exit", "say never"])
    assert code == 0
    assert out.splitlines() == ["players (0/10): ", "say one", "ERR unknown command 'nonsense'"]
    assert [c["command"] for c in game.report()["console"]] == ["say one"]


def test_a_game_without_a_console_is_said():
    code, out, err = peon(cluster(console=False), "-n", "games", "rcon", "keep", "say hi")
    assert code == 1 and "declares no console" in err


def test_an_exec_console_runs_its_command_in_the_server_container():
    kube = cluster()
    game = kube.objects[("Game", None, "peon-testgame")]
    game["spec"]["console"] = {"protocol": "exec", "command": ["testgame", "console"]}
    kube.exec_results[("testgame", "console", "save-all")] = ExecResult(0, "OK save-all\n")
    code, out, err = peon(kube, "-n", "games", "rcon", "keep", "save-all")
    assert (code, out, err) == (0, "OK save-all\n", "")
    assert kube.execs == [("keep-abc", ("testgame", "console", "save-all"))]
