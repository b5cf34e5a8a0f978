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

Challenges without per-client state: a challenge is keyed BLAKE2s (a MAC; RFC 7693 section 2.9:
its keyed mode "can be used as a MAC or PRF") with the key of the period over the source address,
source port and server port, 4 bytes long. The key of a period is keyed BLAKE2s(secret, period
number); a challenge of this period or the one before is valid, so one lives 1 to 2 periods. 0
and 0xFFFFFFFF are never issued: python-a2s sends no challenge when it holds 0, and -1 means
"none" to Valve. (It was HMAC-SHA256: a quarter of the gate's time per datagram went to it.)

Speed (issue 25, bench/wake.py (c)): `answer` takes the two INFO requests (with and without a
challenge) on a fast path of plain byte compares before the general `parse`, and a `Prepared`
holds a server's INFO and RULES answers encoded once per view (the gate builds one when a view
changes); without one they come from the lru caches below.
"""
from __future__ import annotations

import functools
import hashlib
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
        secret = secret or os.urandom(32)
        # BLAKE2s takes a key of at most 32 bytes: a longer secret is hashed down to one.
        self.secret = secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()
        self.period, self.clock = period, clock
        # The last few periods' keyed hashers (copied per challenge): bounded, not per client.
        self._keys: dict[int, hashlib.blake2s] = {}

    def _hasher(self, epoch: int) -> hashlib.blake2s:
        hasher = self._keys.get(epoch)
        if hasher is None:
            key = hashlib.blake2s(epoch.to_bytes(8, "big", signed=True), key=self.secret,
                                  digest_size=32).digest()
            hasher = hashlib.blake2s(key=key, digest_size=4)
            self._keys = {e: h for e, h in self._keys.items() if e >= epoch - 2}
            self._keys[epoch] = hasher
        return hasher

    def _for(self, epoch: int, source: tuple[str, int], server_port: int) -> bytes:
        hasher = self._hasher(epoch).copy()
        hasher.update(f"{source[0]}|{source[1]}|{server_port}".encode())
        value = hasher.digest()
        return b"\x01\x00\x00\x00" if value in (b"\x00" * 4, b"\xff" * 4) else value

    def _epoch(self) -> int:
        return int(self.clock() // self.period)

    def issue(self, source: tuple[str, int], server_port: int) -> bytes:
        return self._for(self._epoch(), source, server_port)

    def valid(self, challenge: bytes, source: tuple[str, int], server_port: int) -> bool:
        epoch = self._epoch()
        return hmac.compare_digest(challenge, self._for(epoch, source, server_port)) or \
            hmac.compare_digest(challenge, self._for(epoch - 1, source, server_port))


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


class Prepared:
    """A server's INFO and RULES answers, encoded once for one view (the gate keeps one per
    sleeping server and builds a new one when its view changes)."""
    __slots__ = ("server", "info", "rules")

    def __init__(self, server: SleepingServer):
        self.server = server
        self.info = info_answer(server)
        self.rules = rules_answer(server)


INFO_REQUEST = HEADER + INFO + INFO_PAYLOAD       # 25 bytes: INFO without a challenge
_INFO_LONG = INFO_LENGTHS[1]


def answer(server: SleepingServer, datagram: bytes, source: tuple[str, int],
           challenges: Challenges, drops: Drops, prepared: Prepared | None = None) -> bytes | None:
    """The answer to send back to `source`, or None (dropped and counted). `prepared`: the
    answers for `server` encoded before (Prepared(server)); without it they are built here."""
    # The fast path: INFO with a challenge (29 bytes) or without one (25), the bulk of queries.
    if len(datagram) == _INFO_LONG and datagram.startswith(INFO_REQUEST):
        if challenges.valid(datagram[25:], source, server.port):
            return prepared.info if prepared is not None else info_answer(server)
        return HEADER + b"A" + challenges.issue(source, server.port)
    if datagram == INFO_REQUEST:
        return HEADER + b"A" + challenges.issue(source, server.port)
    try:
        request = parse(datagram)
    except Refused as e:
        drops.add("a2s", e.reason)
        return None
    if request.challenge is None or not challenges.valid(request.challenge, source, server.port):
        return HEADER + b"A" + challenges.issue(source, server.port)
    if request.kind == INFO:
        return prepared.info if prepared is not None else info_answer(server)
    if request.kind == PLAYER:
        return PLAYER_ANSWER
    return prepared.rules if prepared is not None else rules_answer(server)


def is_query(datagram: bytes) -> bool:
    """A well-formed A2S request (a query, never a join)."""
    try:
        parse(datagram)
    except Refused:
        return False
    return True
