"""The gate's Minecraft: the project's own client (peon.shared.players.query) reads the sleeping server's
status; a status ping never wakes it, a login does (with the player's name) and is told to join
again; packets longer than the state allows are refused before they are read; random and mutated
bytes never raise anything but Refused and never knock."""
import asyncio
import datetime as dt
import json
import struct

import pytest
from hypothesis import given, settings, strategies as st

from peon.gate import minecraft as gate_minecraft
from peon.shared import players
from peon.gate.minecraft import Conversation
from peon.gate.view import Refused, SleepingServer
from peon.shared.players import minecraft_request, varint

SERVER = SleepingServer(name="Creative", version="1.21.4", protocol=769, max_players=20,
                        port=25565, start_seconds=45)


def packet(packet_id: int, body: bytes) -> bytes:
    data = varint(packet_id) + body
    return varint(len(data)) + data


def string(text: str) -> bytes:
    raw = text.encode()
    return varint(len(raw)) + raw


def handshake(next_state: int, protocol: int = 769) -> bytes:
    return packet(0, varint(protocol) + string("play.example.org") + struct.pack(">H", 25565)
                  + varint(next_state))


def login_start(name: str, tail: bytes = b"\x00" * 16) -> bytes:
    return packet(0, string(name) + tail)  # 1.20.2+: the UUID follows the name


def unpack(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        length, at = players.parse_varint(data, 0)
        body = data[at:at + length]
        packet_id, start = players.parse_varint(body, 0)
        out.append((packet_id, body[start:]))
        data = data[at + length:]
    return out


def reason_of(step) -> str:
    [(packet_id, body)] = unpack(step.send)
    assert packet_id == 0
    length, at = players.parse_varint(body, 0)
    return json.loads(body[at:at + length])["text"]


async def _serve_and_query(server, ask=None):
    knocks = []

    async def handle(reader, writer):
        conversation = Conversation(server)
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                step = conversation.receive(data)
                writer.write(step.send)
                knocks.append(step.knock)
                if step.close:
                    break
            await writer.drain()
        finally:
            writer.close()

    gate = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = gate.sockets[0].getsockname()[1]
    try:
        if ask is not None:
            return await ask(port), knocks
        return await players.query("minecraft", "127.0.0.1", port), knocks
    finally:
        gate.close()


def test_the_projects_client_reads_the_sleeping_servers_status_and_wakes_nothing():
    answer, knocks = asyncio.run(_serve_and_query(SERVER))
    assert answer == players.Players(online=0, max=20)
    assert not any(knocks)


def test_opengsq_a_client_nobody_here_wrote_reads_the_status():
    from opengsq.protocols.minecraft import Minecraft

    async def ask(port):
        return await Minecraft("127.0.0.1", port, timeout=2).get_status()
    status, knocks = asyncio.run(_serve_and_query(SERVER, ask))
    assert status["version"] == {"name": "1.21.4", "protocol": 769}
    assert status["players"]["online"] == 0 and status["players"]["max"] == 20
    assert status["description"]["text"] == "Creative\nasleep, join to wake"
    assert not any(knocks)


def test_status_carries_the_last_version_and_the_mark_and_the_ping_is_echoed():
    conversation = Conversation(SERVER)
    step = conversation.receive(minecraft_request("localhost", 25565))
    [(packet_id, body)] = unpack(step.send)
    length, at = players.parse_varint(body, 0)
    status = json.loads(body[at:])
    assert packet_id == 0 and not step.close and step.knock is None
    assert status["version"] == {"name": "1.21.4", "protocol": 769}
    assert status["players"]["online"] == 0 and status["players"]["max"] == 20
    assert status["description"]["text"] == "Creative\nasleep, join to wake"
    pong = conversation.receive(packet(1, b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    assert unpack(pong.send) == [(1, b"\x01\x02\x03\x04\x05\x06\x07\x08")] and pong.close


def test_a_server_never_seen_answers_with_the_clients_protocol():
    step = Conversation(SleepingServer(name="New")).receive(handshake(1, 767) + packet(0, b""))
    body = unpack(step.send)[0][1]
    assert json.loads(body[players.parse_varint(body, 0)[1]:])["version"]["protocol"] == 767


def test_a_login_wakes_it_names_the_player_and_says_to_join_again():
    step = Conversation(SERVER).receive(handshake(2) + login_start("Alex"))
    assert step.knock.wake and step.knock.player == "Alex" and step.knock.how == "login"
    assert step.close
    assert reason_of(step) == "Creative is starting, join again in 45 s"


def test_a_login_in_pieces_is_read_as_it_comes():
    conversation = Conversation(SERVER)
    data = handshake(2) + login_start("Steve")
    for i in range(len(data) - 1):
        assert conversation.receive(data[i:i + 1]).knock is None
    assert conversation.receive(data[-1:]).knock.player == "Steve"


def test_a_transfer_is_a_login():
    assert Conversation(SERVER).receive(handshake(3) + login_start("Alex")).knock.wake


def test_outside_its_hours_a_login_wakes_nothing_and_is_told_when():
    tz = dt.timezone.utc
    server = SleepingServer(name="Evenings", window_open=False,
                            opens_at=dt.datetime(2026, 1, 10, 18, 30, tzinfo=tz),
                            now=dt.datetime(2026, 1, 9, 12, 0, tzinfo=tz))
    step = Conversation(server).receive(handshake(2) + login_start("Alex"))
    assert not step.knock.wake and step.knock.reason == "outside its hours"
    assert reason_of(step) == "Evenings: asleep: wakes at Sat 18:30"


def test_the_wake_list_decides_who_wakes_it():
    server = SleepingServer(name="Family", wake_players=frozenset({"Alex"}))
    assert Conversation(server).receive(handshake(2) + login_start("alex")).knock.wake
    step = Conversation(server).receive(handshake(2) + login_start("Mallory"))
    assert not step.knock.wake and "not on its wake list" in reason_of(step)


@pytest.mark.parametrize("data, reason", [
    (b"\xfe\x01\xfa", "legacy ping"),
    (varint(gate_minecraft.HANDSHAKE_MAX + 1), "long"),          # refused before reading on
    (varint(2 ** 31 - 1), "long"),
    (b"\xff\xff\xff\xff\xff\x01", "bad varint"),
    (varint(0), "bad length"),
    (packet(1, b"x"), "bad packet id"),
    (packet(0, varint(769) + string("h") + b"\x63\xdd" + varint(5)), "bad state"),
    (packet(0, varint(769) + string("h") + b"\x63\xdd" + varint(1) + b"!"), "trailing bytes"),
    (packet(0, varint(769) + varint(256) + b"h" * 256 + b"\x63\xdd\x01"), "bad string"),  # 256 units
    (handshake(2) + varint(gate_minecraft.LOGIN_START_MAX + 1), "long"),
    (handshake(2) + login_start("a" * 17), "bad string"),
    (handshake(2) + login_start(""), "bad player name"),
    (handshake(2) + login_start("bad\nname"), "bad player name"),
    (handshake(1) + varint(10), "long"),                          # a status packet above 9 bytes
    (handshake(1) + packet(0, b"") + packet(0, b""), "bad length"),  # status asked twice
    (handshake(1) + packet(2, b""), "bad packet id"),
])
def test_what_the_protocol_does_not_allow_is_refused_with_its_reason(data, reason):
    with pytest.raises(Refused) as refused:
        Conversation(SERVER).receive(data)
    assert refused.value.reason == reason


def test_a_declared_length_above_the_bound_is_refused_with_nothing_else_buffered():
    conversation = Conversation(SERVER)
    with pytest.raises(Refused):
        conversation.receive(varint(10 ** 6) + b"x" * 100)
    assert len(conversation.buffer) <= 5 + 100  # only what was handed in, never waited for


def test_half_a_handshake_waits_and_wakes_nothing():
    data = handshake(2) + login_start("Alex")
    for cut_at in range(len(data)):
        assert gate_minecraft.is_login(data[:cut_at], SERVER) is None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=5))
def test_random_bytes_never_raise_but_refused_and_never_knock(chunks):
    conversation = Conversation(SERVER)
    try:
        for chunk in chunks:
            step = conversation.receive(chunk)
            assert step.knock is None or step.knock.player  # a knock only with a valid name
            assert len(conversation.buffer) <= 5 + gate_minecraft.LOGIN_START_MAX
    except Refused:
        pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([minecraft_request("localhost", 25565), handshake(2) + login_start("Alex"),
                        handshake(1) + packet(1, b"12345678")]),
       st.integers(0, 40), st.binary(min_size=1, max_size=3), st.booleans())
def test_mutated_packets_never_raise_but_refused(base, at, patch, insert):
    at = min(at, len(base))
    data = base[:at] + patch + base[at + (0 if insert else len(patch)):]
    try:
        step = Conversation(SERVER).receive(data)
    except Refused:
        return
    if step.knock is not None:  # still a login: the handshake said so, and the name is valid
        assert step.knock.player and len(step.knock.player) <= 16
