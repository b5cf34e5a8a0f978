"""Player queries against hostile servers on loopback: answers that declare or send more than the
protocol allows are refused without being read, garbled ones are unknown (None, never "nobody
on"), and a server that never answers costs the timeout and no more."""
import asyncio
import bz2
import json
import socket
import struct
import threading
import time
import tracemalloc

import pytest

from peon.shared import players
from peon.shared.players import Players, varint

MiB = 2 ** 20


def status_json(description: str, online=1, most=2) -> bytes:
    return json.dumps({"version": {"name": "1.21", "protocol": 767},
                       "players": {"online": online, "max": most},
                       "description": description}, ensure_ascii=False).encode()


class Minecraft:
    """Reads the handshake and status request, then answers what `answer(writer)` writes."""

    def __init__(self, answer):
        self.answer, self.sent = answer, 0

    async def handle(self, reader, writer):
        try:
            await reader.read(1024)
            await self.answer(self, writer)
        except (ConnectionError, OSError):
            pass  # the client hung up
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def stream(self, writer, data_chunks):
        for chunk in data_chunks:
            writer.write(chunk)
            await writer.drain()
            self.sent += len(chunk)


async def ask_minecraft(answer, timeout=5.0):
    async with Minecraft(answer) as server:
        tracemalloc.start()
        try:
            started = time.monotonic()
            got = await players.query("minecraft", "127.0.0.1", server.port, timeout=timeout)
            took = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return got, peak, server.sent, took


def test_a_status_declared_beyond_what_the_protocol_allows_is_never_read():
    """A valid status JSON of 40 MB (a real one is at most 32767 UTF-16 units): refused at its
    declared length. Read whole, it would answer Players(1, 2) and hold 40 MB."""
    head = status_json("")[:-2] + b'"'  # ..."description": "   then padding, then "}
    size = 40 * MiB
    body_len = len(head) + size + 2

    async def answer(server, writer):
        packet_len = 1 + len(varint(body_len)) + body_len
        chunk = b"x" * 65536

        def chunks():
            yield varint(packet_len) + b"\x00" + varint(body_len) + head
            for _ in range(size // len(chunk)):
                yield chunk
            yield b'"}'
        await server.stream(writer, chunks())
    got, peak, sent, _ = asyncio.run(ask_minecraft(answer))
    assert got is None
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert sent < size // 2  # the client stopped reading at the length


def test_a_status_at_the_protocol_s_bound_is_read():
    text = "€" * 30000  # 3 UTF-8 bytes, 1 UTF-16 unit each: about 90 KB

    async def answer(server, writer):
        body = status_json(text, online=3, most=40)
        writer.write(varint(1 + len(varint(len(body))) + len(body)) + b"\x00"
                     + varint(len(body)) + body)
        await writer.drain()
    got, peak, _, _ = asyncio.run(ask_minecraft(answer))
    assert got == Players(3, 40)


@pytest.mark.parametrize("raw", [
    b"\xff\xff\xff\xff\xff\xff\x01",              # a varint longer than 5 bytes
    varint(5) + b"\x00" + varint(3) + b"{x}",      # not JSON
    varint(12) + b"\x01" + b"\x00" * 11,           # not a status response
    varint(40) + b"\x00" + varint(100) + b"{",    # the string longer than its packet
], ids=["varint", "json", "packet-id", "string-length"])
def test_a_garbled_status_is_unknown(raw):
    async def answer(server, writer):
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.5)
    got, _, _, took = asyncio.run(ask_minecraft(answer, timeout=2.0))
    assert got is None


@pytest.mark.parametrize("online, most", [(-1, 10), (1.5, 10), ("3", 10), (True, 10), (2 ** 40, 1)])
def test_player_counts_that_are_not_counts_are_unknown(online, most):
    async def answer(server, writer):
        body = status_json("hi", online=online, most=most)
        writer.write(varint(1 + len(varint(len(body))) + len(body)) + b"\x00"
                     + varint(len(body)) + body)
        await writer.drain()
    assert asyncio.run(ask_minecraft(answer))[0] is None


def test_a_server_that_trickles_its_answer_costs_the_timeout_and_no_more():
    async def answer(server, writer):
        writer.write(varint(1000))
        for _ in range(100):
            writer.write(b"\x00")
            await writer.drain()
            await asyncio.sleep(0.1)
    got, _, _, took = asyncio.run(ask_minecraft(answer, timeout=0.5))
    assert got is None and took < 1.5


# --- A2S ---------------------------------------------------------------------------------------

def info_payload(online=4, most=16) -> bytes:
    s = lambda t: t.encode() + b"\x00"  # noqa: E731
    return (b"I" + bytes([17]) + s("hostile") + s("map") + s("valheim") + s("Valheim")
            + struct.pack("<h", 0) + bytes([online, most, 0]) + b"dl" + bytes([0, 0])
            + s("1.0.0") + bytes([0]))


def fragments(whole: bytes, parts: int, ident: int = 7, total: int | None = None) -> list[bytes]:
    size = -(-len(whole) // parts)
    return [b"\xfe\xff\xff\xff" + struct.pack("<IBBH", ident, total or parts, i, 1248)
            + whole[i * size:(i + 1) * size] for i in range(parts)]


class A2S:
    """Answers any datagram with the given datagrams."""

    def __init__(self, datagrams: list[bytes]):
        self.datagrams = datagrams
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        try:
            while True:
                _, peer = self.sock.recvfrom(2048)
                for d in self.datagrams:
                    self.sock.sendto(d, peer)
                    time.sleep(0.002 if len(self.datagrams) > 1 else 0)  # none dropped
        except OSError:
            return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def ask_a2s(datagrams, timeout=2.0):
    with A2S(datagrams) as server:
        tracemalloc.start()
        try:
            got = asyncio.run(players.query("a2s", "127.0.0.1", server.port, timeout=timeout))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return got, peak


def test_a2s_answers_single_and_split():
    assert ask_a2s([b"\xff\xff\xff\xff" + info_payload(4, 16)])[0] == Players(4, 16)
    split = fragments(b"\xff\xff\xff\xff" + info_payload(5, 16), 3)
    assert ask_a2s([split[2], split[0], split[1]])[0] == Players(5, 16)  # in any order


def test_a2s_a_compressed_bomb_is_not_opened():
    """A split answer marked compressed (the ID's top bit; python-a2s looks at bit 15, so both),
    whose bz2 holds a valid answer then 32 MB: refused. Decompressed (as python-a2s does), it
    answers Players(4, 16) and holds 32 MB."""
    packer = bz2.BZ2Compressor(9)
    data = packer.compress(b"\xff\xff\xff\xff" + info_payload(4, 16))
    zeros = b"\x00" * MiB
    for _ in range(32):
        data += packer.compress(zeros)
    data += packer.flush()
    assert len(data) < 2000
    bomb = (b"\xfe\xff\xff\xff" + struct.pack("<IBBH", 0x80008007, 1, 0, 1248)
            + struct.pack("<II", 33 * MiB, 0) + data)
    got, peak = ask_a2s([bomb])
    assert got is None and peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_a2s_more_fragments_than_the_bound_are_refused():
    """255 fragments of 60 KB (16 MB reassembled, by python-a2s): refused at the first."""
    chunk = b"\xff\xff\xff\xff" + info_payload() + b"\x00" * 60000
    flood = [b"\xfe\xff\xff\xff" + struct.pack("<IBBH", 9, 255, i, 1248) + chunk[:60000]
             for i in range(255)]
    got, peak = ask_a2s(flood)
    assert got is None and peak < 4 * MiB


@pytest.mark.parametrize("datagram", [
    b"\xff\xff\xff\xffI\x11cut",                   # cut short
    b"\xff\xff\xff\xffZgarbage",                   # not an info answer
    b"\x00\x01\x02",                               # not A2S at all
    b"\xfe\xff\xff\xff\x01",                       # a fragment cut short
], ids=["cut", "kind", "header", "fragment"])
def test_a2s_garbled_is_unknown(datagram):
    assert ask_a2s([datagram], timeout=1.0)[0] is None


def test_a2s_a_server_that_only_challenges_is_unknown():
    assert ask_a2s([b"\xff\xff\xff\xffA\x01\x02\x03\x04"], timeout=2.0)[0] is None
