"""The test game's Minecraft mode (MINECRAFT_PORT): the server-list ping as Peon's prober asks it,
and a login as a client sends it, on loopback; what the wake gate's real-node test relies on."""
import asyncio
import socket
import struct

from test_testgame import games  # noqa: F401 (fixture)

from peon.shared import players
from peon.shared.players import varint


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login(port: int, name: str) -> tuple[int, bytes]:
    """A 1.21 client's handshake (next state login) and Login Start; the first packet back."""
    def packet(pid: int, body: bytes) -> bytes:
        data = varint(pid) + body
        return varint(len(data)) + data
    host = b"127.0.0.1"
    hs = varint(767) + varint(len(host)) + host + struct.pack(">H", port) + varint(2)
    start = varint(len(name)) + name.encode() + bytes(16)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(packet(0, hs) + packet(0, start))
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    length, at = players.parse_varint(data, 0)
    pid, at2 = players.parse_varint(data, at)
    return pid, data[at2:at + length]


def test_the_server_list_ping_and_a_login(games):  # noqa: F811
    port = free_tcp_port()
    game = games(MINECRAFT_PORT=str(port), SERVER_NAME="Blocky", MAX_PLAYERS="7").start()
    assert asyncio.run(players.minecraft("127.0.0.1", port)) == players.Players(0, 7)
    pid, body = login(port, "alice")
    assert pid == 2 and b"alice" in body          # Login Success, with the player's name
    assert asyncio.run(players.minecraft("127.0.0.1", port)) == players.Players(1, 7)
    assert game.proc.poll() is None


def test_garbage_on_the_minecraft_port_is_dropped_and_the_game_keeps_serving(games):  # noqa: F811
    port = free_tcp_port()
    games(MINECRAFT_PORT=str(port)).start()
    for junk in (b"\xff" * 10, b"\x05\x00", b"GET / HTTP/1.1\r\n\r\n", b"\xfe\x01"):
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(3)
            try:
                s.recv(100)
            except OSError:
                pass
    assert asyncio.run(players.minecraft("127.0.0.1", port)).online == 0
