"""The wake rule for every game's ports: a join wakes, a query never does, garbage and scans never
do; random bytes never raise and never wake a game whose protocol the gate speaks."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from peon.gate.protocols import is_wake_attempt
from peon.shared.players import minecraft_request, varint

M = b"\xff\xff\xff\xff"
A2S_INFO = M + b"TSource Engine Query\x00"


def mc_login(name=b"Alex"):
    handshake = b"\x00" + varint(769) + varint(9) + b"localhost" + struct.pack(">H", 25565) + b"\x02"
    login = b"\x00" + varint(len(name)) + name + b"\x00" * 16
    return varint(len(handshake)) + handshake + varint(len(login)) + login


@pytest.mark.parametrize("protocol, role, packet, wakes", [
    # a Steam game: its game port wakes on a datagram of its own protocol, never on A2S
    ("a2s", "game", b"\x01\x02\x03\x04\x05\x06", True),
    ("a2s", "game", M + b"q\x00\x00\x00\x00", True),        # a Source connect challenge ask
    ("a2s", "game", A2S_INFO, False),
    ("a2s", "game", A2S_INFO + b"abcd", False),
    ("a2s", "game", M + b"U\xff\xff\xff\xff", False),
    ("a2s", "game", M + b"W", False),
    ("a2s", "query", A2S_INFO, False),
    ("a2s", "query", b"\x01\x02\x03\x04\x05\x06", False),  # the query port never wakes
    # Quake 3: queries and joins on one port
    ("quake3", "game", M + b"getinfo 1", False),
    ("quake3", "game", M + b"getstatus", False),
    ("quake3", "game", M + b"getchallenge 123 Quake3Arena", True),
    ("quake3", "game", M + b"connect \x01\x02\x03", True),
    ("quake3", "game", M + b"rcon pw map q3dm1", False),
    ("quake3", "game", b"\x01\x02\x03\x04\x05\x06", False),   # not the protocol
    # Minecraft: a login wakes, a status ping never
    ("minecraft", "game", mc_login(), True),
    ("minecraft", "game", minecraft_request("localhost", 25565), False),
    ("minecraft", "game", mc_login()[:-3], False),              # half a login
    ("minecraft", "game", b"\xfe\x01\xfa", False),              # legacy ping
    ("minecraft", "game", b"GET / HTTP/1.1\r\n\r\n", False),
    # a generic game: anything but garbage and scans
    ("generic-udp", "game", b"\x13\x37\x00\x01hello", True),
    ("generic-tcp", "game", b"\x00\x0b\x01Terraria279", True),
    ("generic-udp", "game", b"", False),                        # empty probe
    ("generic-tcp", "game", b"", False),                        # a connect that sent nothing
    ("generic-udp", "game", b"\x00\x00\x00\x00\x00\x00", False),
    ("generic-udp", "game", b"\r\n", False),
    ("generic-udp", "game", b"abc", False),                     # shorter than any join
    ("generic-tcp", "game", b"GET / HTTP/1.0\r\n\r\n", False),
    ("generic-tcp", "game", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),  # TLS
    ("generic-tcp", "game", b"SSH-2.0-OpenSSH_9.6\r\n", False),
    ("generic-udp", "game", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example", False),
    ("generic-udp", "game", b"\x30\x26\x02\x01\x01\x04\x06public", False),  # SNMP
    ("generic-udp", "game", A2S_INFO, False),
    ("generic-udp", "game", M + b"getstatus", False),
    ("generic-udp", "query", b"\x13\x37\x00\x01hello", False),
])
def test_the_wake_rule(protocol, role, packet, wakes):
    assert is_wake_attempt(protocol, role, packet) is wakes


def test_an_unknown_protocol_or_role_is_an_error_not_a_guess():
    with pytest.raises(ValueError):
        is_wake_attempt("steam", "game", b"x" * 10)
    with pytest.raises(ValueError):
        is_wake_attempt("a2s", "rcon", b"x" * 10)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise_and_never_wake_a_protocol_the_gate_speaks(data):
    assert not is_wake_attempt("minecraft", "game", data)  # random bytes are not a login
    woke = is_wake_attempt("quake3", "game", data)
    assert not woke or data[:4] == M and (data[4:12].lower() == b"connect "
                                          or data[4:].split()[0].lower() == b"getchallenge")
    for protocol in ("a2s", "quake3", "minecraft", "generic-udp", "generic-tcp"):
        assert not is_wake_attempt(protocol, "query", data)
