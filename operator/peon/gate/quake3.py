"""The Quake 3 family (ioquake3, OpenArena) answered for a sleeping server: queries and joins
share the game's UDP port, so the gate answers the first and wakes on the second.

Formats, as ioquake3 speaks them (ioquake/ioq3, code/server/sv_main.c and sv_client.c):
- A connectionless packet starts with four 0xFF bytes (SV_PacketEvent: `*(int *)msg->data == -1`);
  the rest is one text line, tokenised, its first word compared case-insensitively
  (SV_ConnectionlessPacket: MSG_ReadStringLine, Cmd_TokenizeString, Q_stricmp). A "connect"
  packet is Huffman-compressed from byte 12 (`Huff_Decompress(msg, 12)` when the bytes after the
  marker are "connect"), so it is recognised by its first 12 bytes only.
- `getinfo <challenge>` -> "infoResponse\\n" and an info string (SVC_Info): the challenge echoed
  first, then gamename, protocol, hostname, mapname, clients, g_humanplayers, sv_maxclients, ...
  A challenge longer than 128 characters gets no answer ("A maximum challenge length of 128").
- `getstatus <challenge>` -> "statusResponse\\n%s\\n%s" (SVC_Status): the serverinfo cvars
  (sv_hostname, mapname, sv_maxclients, protocol, gamename, version, ...) with the challenge set
  last, a newline, then one line per player ("score ping \\"name\\""): none here.
- `getchallenge <clientChallenge> <gamename>` and `connect <userinfo>` are a client joining
  (SV_GetChallenge answers "challengeResponse ..."; SV_DirectConnect). Here both are a knock.
  A knock is answered only with "print\\n<why>\\n" and only when that is no larger than the knock.
  Quake 3 clients keep a print from the server they connect to in clc.serverMessage, shown on the
  connect screen (cl_main.c CL_ConnectionlessPacket, "print"); that the client's resend of
  getchallenge then gets it in once the server is up is expected, not yet proven: the layer that
  builds the OpenArena image must show it against the real client or server.
- The client's browser drops an infoResponse without its own gamename or protocol ("Game mismatch
  in info packet", "Different protocol info packet": cl_main.c CL_ServerInfoPacket), so a server
  never seen must get both from its Game in the catalogue, or it is not listed.
- Info strings may hold no backslash, quote or semicolon (Info_SetValueForKey refuses them):
  values shown are stripped of them; a challenge holding one is refused.

Amplification: Quake 3 queries have no challenge step, and their answers are larger than the
request (a 13-byte getstatus, a few hundred bytes back). ioquake3 bounds it by rate: 10 a second
per address and a global outbound bucket (SVC_RateLimitAddress(from, 10, 1000), SVC_RateLimit(
&outboundLeakyBucket, 10, 100)); the gate's server must do the same with view.RateLimiter.
Answers here are bounded by MAX_INFO_STRING (1024 bytes), as ioquake3's are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .view import Drops, Knock, Refused, SleepingServer, cut, knock

MARKER = b"\xff\xff\xff\xff"
CONNECT = b"connect "
MAX_MSGLEN = 16384        # ioquake3's qcommon.h: no message is larger
MAX_STRING_CHARS = 1024   # a command line
MAX_INFO_STRING = 1024
CHALLENGE_MAX = 128       # SVC_Info / SVC_Status
QUERIES = ("getinfo", "getstatus")
JOINS = ("getchallenge", "connect")
_NOT_IN_INFO = re.compile(r'[\\";\x00-\x1f\x7f]')


@dataclass(frozen=True)
class Packet:
    command: str          # lower case: getinfo, getstatus, getchallenge, connect
    argument: str = ""    # the challenge of a query


def parse(datagram: bytes) -> Packet:
    """A strict connectionless packet the gate handles, or Refused."""
    if not datagram:
        raise Refused("empty")
    if len(datagram) > MAX_MSGLEN:
        raise Refused("long")
    if len(datagram) < 5:
        raise Refused("short")
    if datagram[:4] != MARKER:
        raise Refused("bad header")
    if datagram[4:12].lower() == CONNECT:
        if len(datagram) <= 12:
            raise Refused("short", "connect without its userinfo")
        return Packet("connect")
    line = datagram[4:].split(b"\n", 1)[0].split(b"\x00", 1)[0]
    if len(line) > MAX_STRING_CHARS:
        raise Refused("long")
    if not line or any(b < 0x20 and b != 0x09 or b == 0x7F for b in line):
        raise Refused("bad string")
    words = line.decode("latin-1").split()
    command = words[0].lower() if words else ""
    if command in QUERIES:
        challenge = words[1] if len(words) > 1 else ""
        if len(challenge) > CHALLENGE_MAX or _NOT_IN_INFO.search(challenge):
            raise Refused("bad challenge")
        return Packet(command, challenge)
    if command == "getchallenge":
        return Packet(command)
    raise Refused("unknown request", command[:20])  # rcon, disconnect, ... are never a knock


def _info(pairs: list[tuple[str, str]], limit: int = MAX_INFO_STRING) -> str:
    out = ""
    for key, value in pairs:
        entry = f"\\{_NOT_IN_INFO.sub('', key)}\\{_NOT_IN_INFO.sub('', cut(value))}"
        if len(out) + len(entry) >= limit:  # Info_SetValueForKey's bound
            break
        out += entry
    return out


def _common(server: SleepingServer) -> list[tuple[str, str]]:
    pairs = [("gamename", server.game)] if server.game else []
    if server.protocol is not None:  # the client's browser drops a server of another protocol
        pairs.append(("protocol", str(server.protocol)))
    return pairs


def info_response(server: SleepingServer, challenge: str) -> bytes:
    pairs = [("challenge", challenge), *_common(server),
             ("hostname", server.name), ("mapname", server.shown_map), ("clients", "0"),
             ("g_humanplayers", "0"), ("sv_maxclients", str(server.max_players)),
             *[(k, v) for k, v in server.info if k in ("gametype", "pure", "g_needpass")],
             ("peon", server.mark)]
    return MARKER + b"infoResponse\n" + _info(pairs).encode("latin-1", "replace")


def status_response(server: SleepingServer, challenge: str) -> bytes:
    pairs = [("sv_hostname", server.name), ("mapname", server.shown_map),
             ("sv_maxclients", str(server.max_players)), *_common(server)]
    if server.version:
        pairs.append(("version", server.version))
    taken = {k for k, _ in pairs} | {"challenge", "peon"}
    pairs += [(k, v) for k, v in server.info if k not in taken]
    # The challenge goes last, where Info_SetValueForKey puts it, so a long serverinfo never
    # cuts it off.
    last = _info([("challenge", challenge)])
    info = _info(pairs + [("peon", server.mark)], MAX_INFO_STRING - len(last)) + last
    return MARKER + b"statusResponse\n" + info.encode("latin-1", "replace") + b"\n"


def join_print(server: SleepingServer, decision: Knock) -> bytes:
    # Short: the print goes back only when no larger than the getchallenge that asked.
    why = f"starting, join in {server.start_seconds} s" if decision.wake else server.mark
    return MARKER + b"print\n" + why.encode("latin-1", "replace") + b"\n"


@dataclass(frozen=True)
class Outcome:
    reply: bytes | None = None
    knock: Knock | None = None


def answer(server: SleepingServer, datagram: bytes, drops: Drops) -> Outcome:
    """What to send back (None: nothing), and the knock when it was a join."""
    try:
        packet = parse(datagram)
    except Refused as e:
        drops.add("quake3", e.reason)
        return Outcome()
    if packet.command == "getinfo":
        return Outcome(info_response(server, packet.argument))
    if packet.command == "getstatus":
        return Outcome(status_response(server, packet.argument))
    decision = knock(server, "connect")
    reply = join_print(server, decision)
    return Outcome(reply if len(reply) <= len(datagram) else None, decision)


def is_query(datagram: bytes) -> bool:
    try:
        return parse(datagram).command in QUERIES
    except Refused:
        return False


def is_join(datagram: bytes) -> bool:
    try:
        return parse(datagram).command in JOINS
    except Refused:
        return False
