"""Player counts through the same code the operator uses, over the real protocols."""
import asyncio
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from fakegames import A2SServer, MinecraftServer  # noqa: E402
from peon.shared import players  # noqa: E402
from peon.shared.players import Players  # noqa: E402


def query(*args, **kwargs):
    return asyncio.run(players.query(*args, **kwargs))


def test_a2s_reports_players_as_they_join_and_leave():
    server = A2SServer(players=0, max_players=10)
    try:
        assert query("a2s", "127.0.0.1", server.port) == Players(0, 10)
        server.players = 3
        assert query("a2s", "127.0.0.1", server.port) == Players(3, 10)
        assert server.queries == 2
    finally:
        server.close()


def test_minecraft_ping_reports_players():
    server = MinecraftServer(players=5, max_players=20)
    try:
        assert query("minecraft", "127.0.0.1", server.port) == Players(5, 20)
    finally:
        server.close()


def test_a_silent_server_is_unknown_not_empty():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        assert query("a2s", "127.0.0.1", s.getsockname()[1], timeout=0.3) is None
    finally:
        s.close()
    assert query("minecraft", "127.0.0.1", 1, timeout=0.3) is None
    assert query("none", "127.0.0.1", 1) is None
