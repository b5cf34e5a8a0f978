"""Source RCON (Valve's remote console, which Minecraft, ARK, Palworld, Rust and many more
speak): a client for `kubectl peon rcon` and the maintenance warnings (issue 28).

Written here: the protocol is small (Valve Developer Community, "Source RCON Protocol"), and
the `rcon` package on PyPI is GPL-3.0, which does not fit Peon's Apache-2.0.

A packet is `size` (int32 LE, the bytes that follow), `id` (int32), `type` (int32), a body
ending in NUL, and one more NUL. The client authenticates (type 3) with the password; the
server answers with an empty RESPONSE_VALUE and an AUTH_RESPONSE (type 2) whose id is the
request's, or -1 when the password is wrong. A command is EXECCOMMAND (type 2); its answer may
come in several RESPONSE_VALUE packets (type 0), so the client sends an empty RESPONSE_VALUE
after it and reads until that one is mirrored back. Every read is bounded: a packet by the
protocol's limit, an answer by `max_answer`, and the whole exchange by `timeout`. The password
is never logged nor put in an error.
"""
from __future__ import annotations

import asyncio
import itertools
import struct

AUTH, AUTH_RESPONSE, EXECCOMMAND, RESPONSE_VALUE = 3, 2, 2, 0
MAX_PACKET = 4096 + 10  # a body of at most 4096 bytes, its id, type and two NULs
MIN_PACKET = 10
MAX_ANSWER = 1 << 20


class RconError(Exception):
    """The console could not be reached, or answered outside the protocol."""


class RconAuthError(RconError):
    """The console refused the password."""


def encode(packet_id: int, kind: int, body: str) -> bytes:
    raw = body.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError("a console command cannot hold a NUL")
    if len(raw) > MAX_PACKET - MIN_PACKET:
        raise ValueError(f"a console command is at most {MAX_PACKET - MIN_PACKET} bytes")
    payload = struct.pack("<ii", packet_id, kind) + raw + b"\x00\x00"
    return struct.pack("<i", len(payload)) + payload


def decode(payload: bytes) -> tuple[int, int, str]:
    """(id, type, body) of one packet without its size field."""
    if not MIN_PACKET <= len(payload) <= MAX_PACKET or not payload.endswith(b"\x00"):
        raise RconError("the console sent a packet outside the protocol")
    packet_id, kind = struct.unpack_from("<ii", payload)
    body = payload[8:].rstrip(b"\x00")  # one NUL ends the body, one the packet (some send one)
    return packet_id, kind, body.decode("utf-8", errors="replace")


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, int, str]:
    try:
        (size,) = struct.unpack("<i", await reader.readexactly(4))
        if not MIN_PACKET <= size <= MAX_PACKET:  # refused before reading it
            raise RconError(f"the console announced a packet of {size} bytes")
        return decode(await reader.readexactly(size))
    except asyncio.IncompleteReadError as e:
        raise RconError("the console closed the connection") from e


class Rcon:
    """One authenticated console connection.

        async with Rcon(host, port, password) as console:
            answer = await console.command("say Restarting in 5 minutes")
    """

    def __init__(self, host: str, port: int, password: str, timeout: float = 10.0,
                 max_answer: int = MAX_ANSWER, sock=None):
        # `sock`: a connected socket to speak over instead (a port-forward's end); host and
        # port then only name the console in messages.
        self.host, self.port, self._password, self._sock = host, port, password, sock
        self.timeout, self.max_answer = timeout, max_answer
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def __repr__(self) -> str:  # never the password
        return f"Rcon({self.host}:{self.port})"

    async def __aenter__(self) -> "Rcon":
        try:
            async with asyncio.timeout(self.timeout):
                if self._sock is not None:
                    self._reader, self._writer = await asyncio.open_connection(sock=self._sock)
                else:
                    self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                await self._login()
        except TimeoutError:
            await self.close()
            raise RconError(f"the console at {self.host}:{self.port} did not answer within "
                            f"{self.timeout:g} s") from None
        except OSError as e:
            await self.close()
            raise RconError(f"cannot reach the console at {self.host}:{self.port}: "
                            f"{e.strerror or type(e).__name__}") from None
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None

    async def _login(self) -> None:
        login = next(self._ids)
        self._writer.write(encode(login, AUTH, self._password))
        await self._writer.drain()
        while True:
            packet_id, kind, _ = await read_packet(self._reader)
            if kind == AUTH_RESPONSE:
                if packet_id == -1:
                    raise RconAuthError(f"the console at {self.host}:{self.port} refused the "
                                        "password")
                if packet_id != login:
                    raise RconError("the console answered another login")
                return
            # an empty RESPONSE_VALUE comes first from Source servers: skipped

    async def command(self, text: str) -> str:
        """The console's whole answer to one command."""
        asked, mirror = next(self._ids), next(self._ids)
        self._writer.write(encode(asked, EXECCOMMAND, text) + encode(mirror, RESPONSE_VALUE, ""))
        parts, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
                while True:
                    packet_id, kind, body = await read_packet(self._reader)
                    if packet_id == mirror:
                        return "".join(parts)
                    if packet_id == -1:
                        raise RconAuthError("the console no longer accepts this login")
                    if packet_id != asked or kind != RESPONSE_VALUE:
                        continue  # a server's own extra packet (Valve's 0x0100 after a mirror)
                    size += len(body)
                    if size > self.max_answer:
                        raise RconError(f"the console's answer exceeds {self.max_answer} bytes")
                    parts.append(body)
        except TimeoutError:
            raise RconError(f"the console did not finish its answer within {self.timeout:g} s") \
                from None
