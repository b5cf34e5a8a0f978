"""Steam A2S answered for a sleeping server: INFO, PLAYER (nobody), RULES, with the challenge step.

Formats (https://developer.valvesoftware.com/wiki/Server_queries), all after the 0xFFFFFFFF header:
  A2S_INFO    'T' "Source Engine Query\\0" [challenge:4]   exactly 25 or 29 bytes in all
  A2S_PLAYER  'U' challenge:4                              exactly 9 bytes
  A2S_RULES   'V' challenge:4                              exactly 9 bytes
  S2C_CHALLENGE answer: 'A' challenge:4                    9 bytes
Anything else (other lengths, the deprecated A2S_SERVERQUERY_GETCHALLENGE 'W' whose 9-byte
answer would be larger than its 5-byte request, split or compressed requests) is refused with a
reason and never answered.

No amplification: before a valid challenge the only answer is the 9-byte challenge, never more
than the request (INFO without a challenge is 25 bytes, PLAYER and RULES 9). A valid challenge
proves the asker receives datagrams at its source address, so the full answers then go only to
askers who are who they say.

Challenges without per-client state: a challenge is HMAC-SHA256(key of the period, source address,
source port, server port), cut to 4 bytes. The key of a period is HMAC(secret, period number); a
challenge of this period or the one before is valid, so one lives 1 to 2 periods. 0 and 0xFFFFFFFF
are never issued: python-a2s sends no challenge when it holds 0, and -1 means "none" to Valve.
"""
from __future__ import annotations

import functools
import hmac
import os
import struct
import time
from dataclasses import dataclass
from typing import Callable

from .view import Drops, Refused, SleepingServer, cut

HEADER = b"\xff\xff\xff\xff"
INFO_PAYLOAD = b"Source Engine Query\x00"
INFO, PLAYER, RULES, GETCHALLENGE = b"T", b"U", b"V", b"W"
INFO_LENGTHS = (len(HEADER) + 1 + len(INFO_PAYLOAD), len(HEADER) + 1 + len(INFO_PAYLOAD) + 4)
CHALLENGED_LENGTH = len(HEADER) + 1 + 4
CHALLENGE_PERIOD = 30.0  # seconds: a challenge is valid 30 to 60 s (clients ask again at once)

# Extra data flag bits of A2S_INFO.
EDF_PORT, EDF_KEYWORDS, EDF_GAMEID = 0x80, 0x20, 0x01


@dataclass(frozen=True)
class Request:
    kind: bytes            # INFO, PLAYER or RULES
    challenge: bytes | None  # 4 bytes, or None for an INFO without one


def parse(datagram: bytes) -> Request:
    """A strict A2S request, or Refused."""
    if not datagram:
        raise Refused("empty")
    if len(datagram) < 5:
        raise Refused("short")
    if datagram[:4] != HEADER:
        raise Refused("bad header")
    kind = datagram[4:5]
    if kind == INFO:
        if len(datagram) not in INFO_LENGTHS:
            raise Refused("bad length", f"A2S_INFO of {len(datagram)} bytes")
        if datagram[5:25] != INFO_PAYLOAD:
            raise Refused("bad payload")
        return Request(INFO, datagram[25:29] or None)
    if kind in (PLAYER, RULES):
        if len(datagram) != CHALLENGED_LENGTH:
            raise Refused("bad length", f"{len(datagram)} bytes")
        return Request(kind, datagram[5:9])
    if kind == GETCHALLENGE:
        raise Refused("deprecated request")  # its answer would be larger than it
    raise Refused("unknown request")


class Challenges:
    """Stateless challenges: derived from the source and a secret that rotates each period."""

    def __init__(self, secret: bytes | None = None, period: float = CHALLENGE_PERIOD,
                 clock: Callable[[], float] = time.monotonic):
        self.secret = secret or os.urandom(32)
        self.period, self.clock = period, clock
        self._keys: dict[int, bytes] = {}  # the last few periods' keys: bounded, not per client

    def _key(self, epoch: int) -> bytes:
        key = self._keys.get(epoch)
        if key is None:
            key = hmac.digest(self.secret, epoch.to_bytes(8, "big", signed=True), "sha256")
            self._keys = {e: k for e, k in self._keys.items() if e >= epoch - 2}
            self._keys[epoch] = key
        return key

    def _for(self, epoch: int, source: tuple[str, int], server_port: int) -> bytes:
        message = f"{source[0]}|{source[1]}|{server_port}".encode()
        value = hmac.digest(self._key(epoch), message, "sha256")[:4]
        return b"\x01\x00\x00\x00" if value in (b"\x00" * 4, b"\xff" * 4) else value

    def _epoch(self) -> int:
        return int(self.clock() // self.period)

    def issue(self, source: tuple[str, int], server_port: int) -> bytes:
        return self._for(self._epoch(), source, server_port)

    def valid(self, challenge: bytes, source: tuple[str, int], server_port: int) -> bool:
        epoch = self._epoch()
        return any(hmac.compare_digest(challenge, self._for(e, source, server_port))
                   for e in (epoch, epoch - 1))


def _cstr(text: str) -> bytes:
    return cut(text).encode("utf-8") + b"\x00"


@functools.lru_cache(maxsize=4096)
def info_answer(server: SleepingServer) -> bytes:
    """A2S_INFO's answer ('I', Source format): nobody on, the mark in map and keywords."""
    edf = EDF_PORT | EDF_KEYWORDS | EDF_GAMEID
    return b"".join((
        HEADER, b"I", bytes([17]),  # protocol version Source servers send
        _cstr(server.name), _cstr(server.shown_map), _cstr(server.folder), _cstr(server.game),
        struct.pack("<H", server.app_id & 0xFFFF),
        bytes([0, min(server.max_players, 255), 0]),  # players, max players, bots
        b"d", b"l", b"\x00", b"\x00",  # dedicated, Linux, no password shown, no VAC
        _cstr(server.version or "0"),
        bytes([edf]),
        struct.pack("<H", server.port & 0xFFFF),
        _cstr(f"peon,{server.mark}"),
        struct.pack("<Q", server.app_id & 0xFFFFFF),  # the full app id (the short is cut)
    ))


PLAYER_ANSWER = HEADER + b"D\x00"  # nobody on


@functools.lru_cache(maxsize=4096)
def rules_answer(server: SleepingServer) -> bytes:
    rules = {"peon_state": "asleep", "peon_note": server.mark,
             "peon_wake": "on join" if server.may_wake else "no"}
    if server.version:
        rules["version"] = server.version
    return HEADER + b"E" + struct.pack("<H", len(rules)) + b"".join(
        _cstr(k) + _cstr(v) for k, v in rules.items())


def answer(server: SleepingServer, datagram: bytes, source: tuple[str, int],
           challenges: Challenges, drops: Drops) -> bytes | None:
    """The answer to send back to `source`, or None (dropped and counted)."""
    try:
        request = parse(datagram)
    except Refused as e:
        drops.add("a2s", e.reason)
        return None
    if request.challenge is None or not challenges.valid(request.challenge, source, server.port):
        return HEADER + b"A" + challenges.issue(source, server.port)
    if request.kind == INFO:
        return info_answer(server)
    if request.kind == PLAYER:
        return PLAYER_ANSWER
    return rules_answer(server)


def is_query(datagram: bytes) -> bool:
    """A well-formed A2S request (a query, never a join)."""
    try:
        parse(datagram)
    except Refused:
        return False
    return True
