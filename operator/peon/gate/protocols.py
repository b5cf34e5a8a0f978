"""Which packets are a player joining: the gate's wake rule for every game's ports.

    is_wake_attempt(protocol, port_role, packet) -> bool

`protocol` is how the game's clients connect (the catalogue says; "generic" when it does not):
  "a2s"        a Steam game: queries (A2S) on its query port, its own protocol on its game port
  "quake3"     the Quake 3 family: queries and joins on one UDP port
  "minecraft"  Minecraft Java: the server-list ping and the login on one TCP port
  "generic-udp", "generic-tcp"  a game whose protocol Peon does not speak
`port_role` is "game" or "query". `packet` is a UDP datagram, or a TCP connection's first bytes
(b"" when the connection sent none).

The rule:
1. A query never wakes: nothing on a query port, and on a game port nothing that parses as a
   query of any family the gate speaks (A2S, Quake 3 getinfo/getstatus, the Minecraft status
   ping). Having a server in one's list must not start it (itzg/mc-router #387).
2. Where the gate speaks the game's protocol, only its join wakes: a Minecraft handshake with
   next state login (or transfer) followed by a Login Start with a valid name; a Quake 3
   getchallenge or connect. Anything else there is not the protocol and wakes nothing.
3. Where it does not (a2s game ports, generic ports), a packet wakes unless it is garbage or a
   scan: empty (a UDP probe, or a TCP connect that sends nothing: SYN and connect scans), shorter
   than MIN_JOIN bytes, only whitespace or zeros, a query of a family above, or a well-known
   scanner opening (HTTP, TLS, SSH, RDP/X.224, SMB, DNS-shaped, SNMP). This is a heuristic: Peon
   cannot tell a real join of a protocol it does not speak from noise of that length, so what
   wakes a generic game is bounded by the rate limit, the per-server switch and uptime windows,
   and a Game that names its protocol gets rule 2. A TCP game whose server speaks first (the
   client waits for a banner) never sends bytes first and so cannot be woken by this rule; its
   Game must name its protocol.
Whether a knock then wakes is the server's rule (view.knock): switched off, outside a window
or not on the wake list, nothing wakes.
"""
from __future__ import annotations

from . import a2s, minecraft, quake3
from .view import SleepingServer

PROTOCOLS = ("a2s", "quake3", "minecraft", "generic-udp", "generic-tcp")
PORT_ROLES = ("game", "query")
MIN_JOIN = 4
# Openings of protocols that are not games, as scanners send them to every open port.
SCAN_OPENINGS = (
    b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS ", b"CONNECT ", b"PRI * HTTP",  # HTTP
    b"\x16\x03",           # a TLS handshake record (ClientHello)
    b"SSH-",               # an SSH banner
    b"\x03\x00",           # TPKT: RDP's X.224 connection request
    b"\x00\x00\x00\x85\xffSMB", b"\x00\x00\x00\xa4\xffSMB",  # SMB negotiate
    b"\x30\x82", b"\x30\x81", b"\x30\x26", b"\x30\x29",  # BER sequences: SNMP, LDAP
)
# A stand-in server for parsing joins: the classification is about the bytes, not the rules.
_ANY = SleepingServer(name="")


def is_query(packet: bytes) -> bool:
    """A query of a family the gate speaks: it asks about a server, it never joins one."""
    if a2s.is_query(packet) or quake3.is_query(packet):
        return True
    return packet[:5] == a2s.HEADER + a2s.GETCHALLENGE  # deprecated A2S challenge ask


def is_scan(packet: bytes) -> bool:
    """Garbage or a scanner's probe: never a player joining."""
    if len(packet) < MIN_JOIN or not packet.strip(b" \t\r\n\x00"):
        return True
    if packet.startswith(SCAN_OPENINGS):
        return True
    return _looks_like_dns(packet)


def _looks_like_dns(packet: bytes) -> bool:
    """A DNS query header: one question, no answers (what UDP scanners send first)."""
    return (len(packet) >= 12 and packet[4:6] == b"\x00\x01" and packet[6:12] == b"\x00" * 6
            and packet[2] & 0x80 == 0)


def is_wake_attempt(protocol: str, port_role: str, packet: bytes) -> bool:
    if protocol not in PROTOCOLS or port_role not in PORT_ROLES:
        raise ValueError(f"unknown protocol {protocol!r} or port role {port_role!r}")
    if port_role == "query" or not packet:
        return False
    if protocol == "quake3":
        return quake3.is_join(packet)
    if protocol == "minecraft":
        return minecraft.is_login(packet, _ANY) is not None
    return not is_query(packet) and not is_scan(packet)
