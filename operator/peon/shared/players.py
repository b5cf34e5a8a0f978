"""How many players are on: asked of the server itself, by the protocol its Game names.

    a2s        Steam's A2S_INFO query, on the game's query port (UDP)
    minecraft  the Minecraft server-list ping (TCP)
    quake3     the Quake 3 family's getstatus (ioquake3, OpenArena), on the game port (UDP)

All are spoken here, in a few lines each, rather than through python-a2s, mcstatus or opengsq:
the server answering is whoever wrote the GameServer (its image, its probe address), and those
libraries read what the peer declares (a Minecraft status of 200 MB was read whole; A2S
fragments are reassembled and bz2-decompressed without a bound). Here every read is bounded by
what the protocol allows and the whole query by one timeout. opengsq 3.7.0 (looked at for
Quake 3) sends getstatus without a challenge, so it takes any datagram from the server's
address as the answer, brings its own socket layer and some fifty protocols for one, and its
answer still needs the mapping to a count written here.

A failed query is never read as "nobody is on": it returns None and the caller retries.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import json
import logging
import re
import secrets
import socket
import struct
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# The status JSON is a protocol string of at most 32767 UTF-16 units, each at most 3 UTF-8
# bytes; its packet adds an id (1 byte) and the string's length (a varint, at most 3 bytes).
MINECRAFT_STATUS_MAX = 3 * 32767
MINECRAFT_PACKET_MAX = 1 + 3 + MINECRAFT_STATUS_MAX
# An A2S_INFO answer is one datagram in practice; a split one (Source's multi-packet answer)
# is taken up to this many fragments and bytes, uncompressed only.
A2S_FRAGMENTS_MAX = 8
A2S_BYTES_MAX = 64 * 1024
A2S_CHALLENGES_MAX = 3


class Garbled(ValueError):
    """The peer's answer is not what the protocol allows."""


@dataclass(frozen=True)
class Players:
    online: int
    max: int
    # What the server last called itself (the wake gate answers with it while it sleeps): the
    # name (A2S), MOTD (Minecraft) or hostname (Quake 3), the map, the version and the protocol
    # number (Minecraft, Quake 3), and the players' names where the answer lists them (Quake 3).
    # Not compared: a new answer is news only when the counts change.
    name: str | None = field(default=None, compare=False)
    map: str | None = field(default=None, compare=False)
    version: str | None = field(default=None, compare=False)
    protocol: int | None = field(default=None, compare=False)
    names: tuple[str, ...] = field(default=(), compare=False)
    # The game it says it is: A2S's game, Quake 3's gamename (getinfo's, which a browser
    # compares with its own and drops the server when they differ: "Game mismatch").
    game: str | None = field(default=None, compare=False)


TEXT_MAX = 120  # UTF-8 bytes kept of each text a server reports


def text(value: object) -> str | None:
    """A server's text, bounded and without control characters; None when not a string."""
    if not isinstance(value, str):
        return None
    value = "".join(c for c in value if c >= " " or c == " ")
    raw = value.encode("utf-8")
    return raw[:TEXT_MAX].decode("utf-8", "ignore") if len(raw) > TEXT_MAX else value


def _players(online: object, most: object, **about) -> Players:
    if not all(type(n) is int and 0 <= n < 2 ** 31 for n in (online, most)):
        raise Garbled("player counts are not counts")
    return Players(online, most, **about)


# --- Minecraft server-list ping ---------------------------------------------------------------

def varint(n: int) -> bytes:
    n &= 0xFFFFFFFF
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _string(s: str) -> bytes:
    raw = s.encode()
    return varint(len(raw)) + raw


def minecraft_request(host: str, port: int) -> bytes:
    """The handshake (protocol version -1: "any", next state status) and the status request."""
    handshake = b"\x00" + varint(-1) + _string(host) + struct.pack(">H", port) + varint(1)
    return varint(len(handshake)) + handshake + varint(1) + b"\x00"


async def read_varint(reader: asyncio.StreamReader) -> int:
    n = 0
    for i in range(5):  # a 32-bit varint is at most 5 bytes
        b = (await reader.readexactly(1))[0]
        n |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return n
    raise Garbled("a varint longer than 5 bytes")


def parse_varint(data: bytes, at: int) -> tuple[int, int]:
    n = 0
    for i in range(5):
        if at + i >= len(data):
            raise Garbled("a varint cut short")
        b = data[at + i]
        n |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return n, at + i + 1
    raise Garbled("a varint longer than 5 bytes")


def parse_status(packet: bytes) -> Players:
    """The status response packet (its length already read): id 0, then the JSON string."""
    if packet[:1] != b"\x00":
        raise Garbled("not a status response")
    length, at = parse_varint(packet, 1)
    if length > MINECRAFT_STATUS_MAX or at + length != len(packet):
        raise Garbled("the status string's length is not the packet's")
    text = packet[at:].decode("utf-8")
    if len(text.encode("utf-16-le")) > 2 * 32767:
        raise Garbled("the status string is longer than the protocol allows")
    status = json.loads(text)
    players = status["players"]
    version = status.get("version") if isinstance(status.get("version"), dict) else {}
    motd = status.get("description")
    if isinstance(motd, dict):
        motd = motd.get("text")
    protocol = version.get("protocol")
    return _players(players["online"], players["max"], name=_text(motd),
                    version=_text(version.get("name")),
                    protocol=protocol if type(protocol) is int and 0 <= protocol < 2 ** 31 else None)


async def minecraft(host: str, port: int) -> Players:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(minecraft_request(host, port))
        await writer.drain()
        length = await read_varint(reader)
        if length > MINECRAFT_PACKET_MAX:  # refused before reading: never held in memory
            raise Garbled(f"a status packet of {length} bytes declared")
        return parse_status(await reader.readexactly(length))
    finally:
        writer.close()


# --- Steam A2S_INFO ---------------------------------------------------------------------------

A2S_INFO = b"\xff\xff\xff\xffTSource Engine Query\x00"


def _skip_strings(data: bytes, at: int, count: int) -> int:
    for _ in range(count):
        end = data.index(b"\x00", at)  # ValueError when cut short
        at = end + 1
    return at


def parse_info(payload: bytes) -> Players:
    """An A2S_INFO answer without its 0xFFFFFFFF header: Source ('I') or GoldSrc ('m')."""
    kind = payload[:1]
    if kind == b"I":  # protocol, name, map, folder, game, app id, players, max
        first = 2
        at = _skip_strings(payload, 2, 4) + 2
    elif kind == b"m":  # address, name, map, folder, game, players, max
        first = _skip_strings(payload, 1, 1)
        at = _skip_strings(payload, 1, 5)
    else:
        raise Garbled("not an A2S_INFO answer")
    if at + 2 > len(payload):
        raise Garbled("an A2S_INFO answer cut short")
    name, map_, _folder, game = payload[first:].split(b"\x00", 4)[:4]
    version = None
    if kind == b"I" and at + 7 < len(payload):  # bots, type, environment, visibility, VAC
        end = payload.find(b"\x00", at + 7)
        version = payload[at + 7:end] if end >= 0 else None
    return _players(payload[at], payload[at + 1], name=_text(name), map=_text(map_),
                    version=_text(version), game=_text(game))


def _text(raw: object) -> str | None:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return text(raw)


class Fragments:
    """Source's multi-packet answer, reassembled within A2S_FRAGMENTS_MAX and A2S_BYTES_MAX."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.total = 0
        self.size = 0

    def add(self, datagram: bytes) -> bytes | None:
        """The whole answer once every fragment is in; None while some are missing."""
        if len(datagram) < 12:
            raise Garbled("a fragment cut short")
        ident, total, number = struct.unpack_from("<IBB", datagram, 4)
        if ident & 0x80000000:
            raise Garbled("a compressed answer (not taken)")
        if not 0 < total <= A2S_FRAGMENTS_MAX or number >= total or self.total not in (0, total):
            raise Garbled("fragments that do not add up")
        self.total = total
        if number not in self.parts:
            self.parts[number] = datagram[12:]
            self.size += len(datagram) - 12
        if self.size > A2S_BYTES_MAX:
            raise Garbled("a split answer beyond the bound")
        if len(self.parts) < total:
            return None
        whole = b"".join(self.parts[i] for i in range(total))
        if not whole.startswith(b"\xff\xff\xff\xff"):
            raise Garbled("a split answer without its header")
        return whole[4:]


async def _answer(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """The next answer: one datagram, or a split one's fragments."""
    fragments = Fragments()
    while True:
        datagram = await loop.sock_recv(sock, 65535)  # a datagram is at most that
        if datagram[:4] == b"\xff\xff\xff\xff":
            return datagram[4:]
        if datagram[:4] != b"\xfe\xff\xff\xff":
            raise Garbled("not an A2S answer")
        whole = fragments.add(datagram)
        if whole is not None:
            return whole


async def a2s(host: str, port: int) -> Players:
    loop = asyncio.get_running_loop()
    family, type_, proto, _, address = (await loop.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM))[0]
    with socket.socket(family, type_, proto) as sock:
        sock.setblocking(False)
        sock.connect(address)  # only this peer's datagrams are received
        challenge = b""
        for _ in range(A2S_CHALLENGES_MAX + 1):
            await loop.sock_sendall(sock, A2S_INFO + challenge)
            payload = await _answer(loop, sock)
            if payload[:1] != b"A":  # not a challenge: the answer
                return parse_info(payload)
            challenge = payload[1:5]
        raise Garbled("a server that keeps sending challenges")


# --- Quake 3 getstatus ------------------------------------------------------------------------
# ioquake3's SVC_Status (code/server/sv_main.c): "\xff\xff\xff\xffstatusResponse\n", the
# serverinfo string (\key\value..., the challenge the request carried set last), "\n", then
# one line per client: `score ping "name"`. One datagram, at most MAX_MSGLEN (16384) bytes.
# The serverinfo has no "protocol" (ioquake3 1.36 shows com_protocol, and answers browsers with
# com_legacyprotocol when set: SVC_Info), and a browser drops a server of another protocol, so
# getinfo is asked next for the number it gives browsers (SVC_Info: "infoResponse\n" and an
# info string with challenge, gamename, protocol, ...; both 71 on Debian's OpenArena), briefly:
# without its answer the count still stands.

QUAKE3_MAX = 16384
QUAKE3_CLIENTS_MAX = 64  # MAX_CLIENTS: more player lines than that is not a Quake 3 server
_QUAKE3_PLAYER = re.compile(r'(-?\d{1,10}) (-?\d{1,10}) "([^"]*)"')
_QUAKE3_COLOUR = re.compile(r"\^[^\^]")  # ^1red: the name as a browser shows it


def _quake3_int(info: dict[str, str], key: str) -> int | None:
    value = info.get(key, "")
    return int(value) if value.isdigit() and len(value) < 10 else None


def _quake3_info(datagram: bytes, response: bytes,
                 challenge: str | None) -> tuple[dict[str, str], list[str]]:
    """(the info string's pairs, the lines after it) of an infoResponse or statusResponse;
    `challenge`, when given, must be the one the server echoes (an answer to another request,
    or a forged one, is not taken)."""
    if len(datagram) > QUAKE3_MAX:
        raise Garbled("an answer longer than a Quake 3 message")
    head = b"\xff\xff\xff\xff" + response + b"\n"
    if datagram[:len(head)].lower() != head.lower():
        raise Garbled(f"not the {response.decode()} asked for")
    lines = datagram[len(head):].decode("latin-1").split("\n")
    fields = lines[0].split("\\")
    if fields[0] != "" or len(fields) % 2 == 0:
        raise Garbled("not an info string")
    info: dict[str, str] = {}
    for key, value in zip(fields[1::2], fields[2::2]):
        info.setdefault(key.lower(), value)  # the first of a key, as Info_ValueForKey reads
    if challenge is not None and info.get("challenge") != challenge:
        raise Garbled("an answer to another challenge")
    return info, lines[1:]


def parse_quake3_info(datagram: bytes, challenge: str | None = None
                      ) -> tuple[int | None, str | None]:
    """The protocol number and gamename an infoResponse gives (None for what it does not)."""
    info = _quake3_info(datagram, b"infoResponse", challenge)[0]
    return _quake3_int(info, "protocol"), _text(info.get("gamename"))


def parse_quake3_status(datagram: bytes, challenge: str | None = None) -> Players:
    """A statusResponse (its 0xFFFFFFFF header included)."""
    info, lines = _quake3_info(datagram, b"statusResponse", challenge)
    names = []
    for line in lines:
        if not line:
            continue
        m = _QUAKE3_PLAYER.fullmatch(line)
        if m is None:
            raise Garbled("a player line that is not one")
        names.append(_text(_QUAKE3_COLOUR.sub("", m.group(3))) or "")
    if len(names) > QUAKE3_CLIENTS_MAX:
        raise Garbled("more players than a Quake 3 server holds")
    most = _quake3_int(info, "sv_maxclients")
    if most is None:
        raise Garbled("no sv_maxclients")
    # getinfo's sv_maxclients is sv_maxclients less the private (password-only) slots
    most = max(0, most - (_quake3_int(info, "sv_privateclients") or 0))
    hostname = info.get("sv_hostname")
    return _players(len(names), most,
                    name=_text(_QUAKE3_COLOUR.sub("", hostname)) if hostname else None,
                    map=_text(info.get("mapname")), version=_text(info.get("version")),
                    protocol=_quake3_int(info, "protocol"), names=tuple(names))


QUAKE3_INFO_WAIT = 0.5  # seconds the protocol number (getinfo) is waited for


async def _quake3_ask(loop, sock: socket.socket, command: bytes, parse):
    challenge = secrets.token_hex(8)
    await loop.sock_sendall(sock, b"\xff\xff\xff\xff" + command + b" " + challenge.encode())
    while True:  # a stray datagram (a late answer to an earlier query) is passed over
        try:
            return parse(await loop.sock_recv(sock, QUAKE3_MAX + 1), challenge)
        except Garbled as e:
            if str(e) not in ("an answer to another challenge", "not the infoResponse asked for"):
                raise


async def quake3(host: str, port: int) -> Players:
    loop = asyncio.get_running_loop()
    family, type_, proto, _, address = (await loop.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM))[0]
    with socket.socket(family, type_, proto) as sock:
        sock.setblocking(False)
        sock.connect(address)  # only this peer's datagrams are received
        answer = await _quake3_ask(loop, sock, b"getstatus", parse_quake3_status)
        try:
            async with asyncio.timeout(QUAKE3_INFO_WAIT):
                protocol, game = await _quake3_ask(loop, sock, b"getinfo", parse_quake3_info)
        except (TimeoutError, Garbled, OSError):
            return answer  # the count without getinfo's protocol number and gamename
        return dataclasses.replace(answer, protocol=answer.protocol if protocol is None
                                   else protocol, game=game)


PROTOCOLS = {"a2s": a2s, "minecraft": minecraft, "quake3": quake3}


async def query(protocol: str, host: str, port: int, timeout: float = 2.0) -> Players | None:
    """One query, on the event loop (the prober runs it), within `timeout` in all."""
    ask = PROTOCOLS.get(protocol)
    if ask is None:
        return None
    try:
        async with asyncio.timeout(timeout):
            return await ask(host, port)
    except Exception as e:  # timeouts, refused connections, garbled answers: unknown
        log.debug("player query %s %s:%s failed: %s", protocol, host, port, type(e).__name__)
    return None


# --- Players from the server's log ------------------------------------------------------------
# Where a game's query breaks (Valheim with crossplay answers no A2S: LinuxGSM #4888), a Game
# may name the log lines a join and a leave print (`spec.query.protocol: log`): the operator
# reads the game container's log and counts the players joined and not left, by name. A line
# that states the count itself ("now 2 player(s)") may be named too, and then is the count.
# The patterns are Python regular expressions that are also RE2 (the CRD's CEL compiles them at
# admission); a pattern that backtracks without bound is refused (below), and every line is cut
# to LOG_LINE_MAX bytes before it is matched.

LOG_LINE_MAX = 1024      # bytes of a log line matched (a longer line is matched on its start)
LOG_NAMES_MAX = 1024     # players tracked by name; a join beyond is not counted
LOG_PATTERN_MAX = 512    # characters of a pattern (the CRD's maxLength too)


def nested_repeat(pattern: str) -> str | None:
    """The first group that holds a quantifier and is itself repeated, such as (\\w+)+ or
    ((a|b)*c)*: Python's re may take exponential time on a line that nearly matches it."""
    stack: list[list] = []  # [start, holds a quantifier]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a class: to its closing bracket (a first ] or ^] is literal)
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        repeat = c in "+*" or (c == "{" and pattern[i + 1:i + 2].isdigit())
        if c == "(":
            stack.append([i, False])
        elif c == ")" and stack:
            start, holds = stack.pop()
            after = pattern[i + 1:i + 2]
            if holds and (after in ("+", "*") or (after == "{" and pattern[i + 2:i + 3].isdigit())):
                return pattern[start:i + 2]
            if holds and stack:
                stack[-1][1] = True
        elif repeat and stack:
            stack[-1][1] = True
        i += 1
    return None


@dataclass(frozen=True)
class LogRules:
    """A Game's log lines: `join` and `leave` with a group named `player`, and/or `count`
    with a group named `count` (digits)."""
    join: str | None = None
    leave: str | None = None
    count: str | None = None

    def compiled(self) -> tuple[re.Pattern | None, re.Pattern | None, re.Pattern | None]:
        return tuple(_compile(p) if p else None for p in (self.join, self.leave, self.count))


_COMPILED: dict[str, re.Pattern] = {}


def _compile(pattern: str) -> re.Pattern:
    got = _COMPILED.get(pattern)
    if got is None:
        if len(_COMPILED) > 256:
            _COMPILED.clear()
        got = _COMPILED[pattern] = re.compile(pattern)
    return got


def log_rules_problem(rules: LogRules) -> str | None:
    """What is wrong with a Game's log lines, said for its status; None when they can be used."""
    if bool(rules.join) != bool(rules.leave):
        return "join and leave go together (a join nobody leaves counts for ever)"
    if not rules.count and not rules.join:
        return "name join and leave (or count)"
    for field_, pattern, group in (("join", rules.join, "player"), ("leave", rules.leave, "player"),
                                   ("count", rules.count, "count")):
        if not pattern:
            continue
        if len(pattern) > LOG_PATTERN_MAX:
            return f"{field_} is longer than {LOG_PATTERN_MAX} characters"
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            return f"{field_} is not a regular expression: {e}"
        if group not in compiled.groupindex:
            return f"{field_} names no group (?P<{group}>...) for the {group}"
        if (nested := nested_repeat(pattern)) is not None:
            return (f"{field_} repeats a group that repeats ({nested!r}): it may backtrack "
                    "for ever on a player's line; write it without")
    return None


@dataclass
class LogTally:
    """Joined minus left, by name, as the lines come; and the last count a line stated."""
    rules: LogRules
    names: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    stated: int | None = None

    def feed(self, line: str) -> None:
        line = line.encode("utf-8")[:LOG_LINE_MAX].decode("utf-8", "ignore")
        join, leave, count = self.rules.compiled()
        if count is not None and (m := count.search(line)):
            n = m.group("count")
            if n is not None and n.isdigit() and len(n) < 10:
                self.stated = int(n)
        if join is not None and (m := join.search(line)):
            name = _text(m.group("player"))
            if name and len(self.names) < LOG_NAMES_MAX:
                self.names.setdefault(name, None)
        if leave is not None and (m := leave.search(line)):
            name = _text(m.group("player"))
            if name:
                self.names.pop(name, None)  # a leave of someone never seen joining: nothing

    def players(self) -> Players:
        """The count (the stated one where the Game names a count line and one was seen) and
        the names on; the log tells no player limit (max 0)."""
        online = self.stated if self.rules.count and self.stated is not None else len(self.names)
        return Players(max(0, online), 0, names=tuple(self.names))


def parse_log_timestamp(stamp: bytes) -> int | None:
    """Nanoseconds since the epoch of the kubelet's RFC 3339 timestamp (timestamps=true puts
    one before each line: 2026-12-07T04:01:02.123456789Z); None when it is not one."""
    m = re.fullmatch(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", stamp)
    if m is None:
        return None
    try:
        whole = _dt.datetime.fromisoformat(m[1].decode() + (
            "+00:00" if m[3] == b"Z" else m[3].decode()))
    except ValueError:
        return None
    return int(whole.timestamp()) * 1_000_000_000 + int((m[2] or b"0").ljust(9, b"0"))


@dataclass
class LogPosition:
    """How far a container's log has been read: the last line's timestamp (ns) and how many
    lines carried exactly that timestamp (a read from that second sees them again)."""
    last: int | None = None
    at_last: int = 0

    def since(self) -> str | None:
        """The sinceTime to read from: the last line's whole second (the API takes seconds)."""
        if self.last is None:
            return None
        return _dt.datetime.fromtimestamp(self.last // 1_000_000_000, _dt.timezone.utc
                                          ).strftime("%Y-%m-%dT%H:%M:%SZ")

    def pass_second(self) -> None:
        """Go on from the next second: a read from the last one held nothing new within its
        limit (a second of more log than the limit; the rest of that second is not read)."""
        if self.last is not None:
            self.last += 1_000_000_000 - self.last % 1_000_000_000
            self.at_last = 0

    def new_lines(self, chunk: bytes, full: bool) -> list[str]:
        """The lines of a read from since() not seen before, in order, and the position moved
        past them. `full`: the read stopped at its byte limit, so its last line may be cut
        (left for the next read, unless it is the only one: a line longer than the limit is
        taken cut)."""
        raw = chunk.split(b"\n")
        if raw and raw[-1] == b"":
            raw.pop()
        elif full and len(raw) > 1:
            raw.pop()  # cut by the limit: read again next time
        out, seen_at = [], {}
        for item in raw:
            stamp, _, text = item.partition(b" ")
            t = parse_log_timestamp(stamp)
            if t is None:
                continue  # not a kubelet line (never so with timestamps=true)
            seen_at[t] = seen_at.get(t, 0) + 1
            if self.last is not None and (t < self.last or (
                    t == self.last and seen_at[t] <= self.at_last)):
                continue
            if t == self.last:
                self.at_last += 1
            else:
                self.last, self.at_last = t, 1
            out.append(text.decode("utf-8", "replace").rstrip("\r"))
        return out
