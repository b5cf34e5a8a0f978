"""The Minecraft server-list ping and login, answered for a sleeping server (no I/O here).

A `Conversation` is fed the bytes a client sends on one TCP connection and returns what to send
back, whether to close, and a `Knock` when the client tried to log in. Formats
(https://minecraft.wiki/w/Java_Edition_protocol, "Handshaking", "Status", "Login"):
  every packet    length:varint, packet id:varint, data        (no compression before login)
  Handshake  0x00 protocol:varint, address:string(255), port:u16, next state:varint
                  (1 status, 2 login, 3 transfer: a login handed over by another server)
  Status request 0x00 (no data)  -> Status response 0x00 json:string
  Ping request   0x01 long       -> Pong 0x01 the same long
  Login Start    0x00 name:string(16), then by version a signature (1.19-1.19.2), a UUID (1.19.1+)
                 -> Disconnect (login) 0x00 reason:JSON text component string
A status ping never wakes the server (having it in one's list must not start it: itzg/mc-router
#387); a Login Start does, by the rules of view.knock.

Hold or disconnect: this layer disconnects the player at once with "starting, join again in N s"
(N: the server's usual start time). Holding the client in login until the server is up (lazymc's
way, inside the client's 30 s timeout) needs the gate to proxy the connection to the woken pod;
that is a later layer. Outside an uptime window (or with waking off, or a name not on the wake
list) the same Disconnect says why, and nothing wakes.

Strict bounds: the declared length of every packet is checked against what the packet may hold
in the current state before any more is buffered; a longer one is refused (Refused, "long").
Legacy pings (a first byte 0xFE, clients before 1.7) are refused, not answered.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from .view import Knock, Refused, SleepingServer, cut, knock
from peon.shared.players import varint

ADDRESS_MAX = 255  # UTF-16 units
NAME_MAX = 16
# A string of n units is at most 3n UTF-8 bytes, after its varint length (at most 3 bytes here).
HANDSHAKE_MAX = 1 + 5 + 3 + 3 * ADDRESS_MAX + 2 + 5
STATUS_MAX = 1 + 8  # the ping request; the status request is 1 byte
# Login Start: id, name, then at most (1.19) a key signature: flag, timestamp, key (<= 512 bytes)
# and signature (<= 4096 bytes), each after a varint length, and (1.19.1+) a flag and a UUID.
LOGIN_START_MAX = 1 + (1 + 3 * NAME_MAX) + (1 + 8 + 3 + 512 + 3 + 4096) + (1 + 16)
STATUS, LOGIN, TRANSFER = 1, 2, 3
LEGACY_PING = 0xFE


def read_varint(data: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """(value, next offset), None when the varint is not all there yet; Refused beyond 5 bytes."""
    value = 0
    for i in range(5):
        if at + i >= len(data):
            return None
        b = data[at + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if value >= 2 ** 31:
                value -= 2 ** 32  # a VarInt is a signed 32-bit number
            return value, at + i + 1
    raise Refused("bad varint", "longer than 5 bytes")


def _complete_varint(data: bytes, at: int) -> tuple[int, int]:
    got = read_varint(data, at)
    if got is None:
        raise Refused("short", "a varint cut short")
    return got


def read_string(packet: bytes, at: int, units_max: int) -> tuple[str, int]:
    length, at = _complete_varint(packet, at)
    if not 0 <= length <= 3 * units_max or at + length > len(packet):
        raise Refused("bad string", f"a string of {length} bytes")
    try:
        text = packet[at:at + length].decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("bad string", "not UTF-8") from None
    if len(text.encode("utf-16-le")) > 2 * units_max:
        raise Refused("bad string", "longer than the protocol allows")
    return text, at + length


@dataclass(frozen=True)
class Handshake:
    protocol: int
    address: str
    port: int
    next_state: int


def parse_handshake(packet: bytes) -> Handshake:
    """The Handshake packet (its length already taken off)."""
    packet_id, at = _complete_varint(packet, 0)
    if packet_id != 0:
        raise Refused("bad packet id", f"{packet_id} in handshake")
    protocol, at = _complete_varint(packet, at)
    address, at = read_string(packet, at, ADDRESS_MAX)
    if at + 2 > len(packet):
        raise Refused("short", "no port")
    (port,) = struct.unpack_from(">H", packet, at)
    next_state, at = _complete_varint(packet, at + 2)
    if next_state not in (STATUS, LOGIN, TRANSFER):
        raise Refused("bad state", f"next state {next_state}")
    if at != len(packet):
        raise Refused("trailing bytes")
    return Handshake(protocol, address, port, next_state)


def parse_login_start(packet: bytes) -> str:
    """The player's name from Login Start; what follows it varies by version and is not read."""
    packet_id, at = _complete_varint(packet, 0)
    if packet_id != 0:
        raise Refused("bad packet id", f"{packet_id} in login")
    name, _ = read_string(packet, at, NAME_MAX)
    if not name or not name.isprintable() or name != name.strip():
        raise Refused("bad player name")
    return name


def _packet(packet_id: int, body: bytes) -> bytes:
    data = varint(packet_id) + body
    return varint(len(data)) + data


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return varint(len(raw)) + raw


def status_json(server: SleepingServer, client_protocol: int) -> str:
    """The status: the last real version (the client's own protocol when never seen, so the
    list does not call it incompatible), nobody on, the name and the mark as the MOTD."""
    return json.dumps({
        "version": {"name": cut(server.version or "asleep", 60),
                    "protocol": server.protocol if server.protocol is not None
                    else client_protocol},
        "players": {"online": 0, "max": max(0, server.max_players), "sample": []},
        "description": {"text": f"{cut(server.name, 80)}\n{server.mark}"},
    }, ensure_ascii=False)


def disconnect_text(server: SleepingServer, decision: Knock) -> str:
    if decision.wake:
        return f"{cut(server.name, 80)} is starting, join again in {server.start_seconds} s"
    if decision.reason == "not allowed":
        return f"{cut(server.name, 80)} is asleep and you are not on its wake list"
    return f"{cut(server.name, 80)}: {server.mark}"


@dataclass(frozen=True)
class Step:
    send: bytes = b""
    close: bool = False
    knock: Knock | None = None


class Conversation:
    """One TCP connection's worth of the protocol, fed as bytes arrive."""

    def __init__(self, server: SleepingServer):
        self.server = server
        self.state = "handshake"
        self.buffer = bytearray()
        self.handshake: Handshake | None = None
        self.status_sent = False

    def _bound(self) -> int:
        return {"handshake": HANDSHAKE_MAX, "status": STATUS_MAX, "login": LOGIN_START_MAX
                }.get(self.state, 0)

    def receive(self, data: bytes) -> Step:
        """What to answer to `data` (and any earlier bytes not yet a whole packet); Refused when
        the bytes are not the protocol: the caller closes the connection and counts the reason."""
        if self.state == "done":
            return Step(close=True)
        if not self.buffer and self.state == "handshake" and data[:1] == bytes([LEGACY_PING]):
            raise Refused("legacy ping")
        self.buffer += data
        out, decision = b"", None
        while self.state != "done":
            got = read_varint(self.buffer, 0)
            if got is None:
                break
            length, at = got
            if length <= 0 or length > self._bound():  # before buffering any more of it
                raise Refused("long" if length > 0 else "bad length",
                              f"a {self.state} packet of {length} bytes")
            if len(self.buffer) < at + length:
                break
            packet = bytes(self.buffer[at:at + length])
            del self.buffer[:at + length]
            sent, decision = self._packet(packet)
            out += sent
        if len(self.buffer) > 5 + self._bound():  # cannot happen: every length is bounded
            raise Refused("long")
        return Step(out, self.state == "done", decision)

    def _packet(self, packet: bytes) -> tuple[bytes, Knock | None]:
        if self.state == "handshake":
            self.handshake = parse_handshake(packet)
            self.state = "status" if self.handshake.next_state == STATUS else "login"
            return b"", None
        if self.state == "status":
            return self._status(packet), None
        name = parse_login_start(packet)
        decision = knock(self.server, "login", name)
        self.state = "done"
        reason = json.dumps({"text": disconnect_text(self.server, decision)}, ensure_ascii=False)
        return _packet(0x00, _string(reason)), decision

    def _status(self, packet: bytes) -> bytes:
        if packet == b"\x00" and not self.status_sent:
            self.status_sent = True
            protocol = self.handshake.protocol if self.handshake else 0
            return _packet(0x00, _string(status_json(self.server, protocol)))
        if len(packet) == 9 and packet[0] == 0x01:
            self.state = "done"
            return _packet(0x01, packet[1:])
        raise Refused("bad packet id" if packet[:1] not in (b"\x00", b"\x01") else "bad length",
                      "in status")


def is_login(data: bytes, server: SleepingServer) -> Knock | None:
    """The knock in a connection's first bytes, when they are a whole handshake and Login Start;
    None for a status ping, half a handshake, or anything that is not the protocol."""
    try:
        return Conversation(server).receive(data).knock
    except Refused:
        return None
