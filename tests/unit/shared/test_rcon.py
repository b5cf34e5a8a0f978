"""The Source RCON client (peon.shared.rcon) against the test game's RCON console (a real server
process on loopback), and against consoles that break the protocol."""
import asyncio
import socket
import struct

import pytest

from test_testgame import Game, games  # noqa: F401  (the fixture)

from peon.shared.rcon import MAX_PACKET, Rcon, RconAuthError, RconError, decode, encode

PASSWORD = "correct horse battery"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def console(games):  # noqa: F811
    port = free_tcp_port()
    game = games(RCON_PORT=str(port), RCON_PASSWORD=PASSWORD).start()
    return game, port


def ask(port, password, *commands, **kw):
    async def go():
        async with Rcon("127.0.0.1", port, password, **kw) as c:
            return [await c.command(cmd) for cmd in commands]
    return asyncio.run(go())


def test_a_packet_round_trips_and_a_nul_is_refused():
    raw = encode(7, 2, "say hi")
    assert struct.unpack_from("<i", raw)[0] == len(raw) - 4
    assert decode(raw[4:]) == (7, 2, "say hi")
    with pytest.raises(ValueError):
        encode(1, 2, "say \x00 hi")


def test_commands_reach_the_games_console_and_long_answers_come_whole(console):
    game, port = console
    said, players, lines = ask(port, PASSWORD, "say Restarting in 5 minutes", "players",
                               "lines 2000")
    assert said == "say Restarting in 5 minutes" and players.startswith("players (0/10)")
    # 2,000 lines are about 17 KB: five RESPONSE_VALUE packets, joined in order.
    assert lines.split("\n") == [f"line {i}" for i in range(2000)]
    assert [c["command"] for c in game.report()["console"]] == ["say Restarting in 5 minutes"]


def test_a_wrong_password_is_said_and_never_shown(console):
    _, port = console
    with pytest.raises(RconAuthError) as e:
        ask(port, "hunter22", "say hi")
    assert "refused the password" in str(e.value) and "hunter22" not in str(e.value)
    assert "hunter22" not in repr(Rcon("127.0.0.1", port, "hunter22"))


def test_a_console_that_is_not_there_is_said():
    with pytest.raises(RconError, match="cannot reach the console at 127.0.0.1"):
        ask(free_tcp_port(), PASSWORD, "say hi", timeout=2)


def hostile(answer):
    """A console on loopback that answers every connection with `answer` (bytes), then holds."""
    async def serve(reader, writer):
        await reader.read(100)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(5)
        writer.close()
    return serve


@pytest.mark.parametrize("answer, words", [
    (struct.pack("<i", 200 * 10 ** 6), "announced a packet of 200000000 bytes"),
    (struct.pack("<i", -5), "announced a packet of -5 bytes"),
    (b"", "did not answer within"),
    (struct.pack("<i", MAX_PACKET) + b"\x01" * 12, "did not answer within"),  # cut short
])
def test_a_console_outside_the_protocol_is_refused_before_any_large_read(answer, words):
    async def go():
        server = await asyncio.start_server(hostile(answer), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with Rcon("127.0.0.1", port, PASSWORD, timeout=1):
                pass
        finally:
            server.close()
    with pytest.raises(RconError, match=words):
        asyncio.run(go())
