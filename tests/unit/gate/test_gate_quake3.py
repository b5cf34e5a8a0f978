"""The gate's Quake 3 family: getinfo and getstatus answered in ioquake3's formats (the challenge
echoed, nobody on, the mark), getchallenge and connect knock, everything else dropped and counted;
random and mutated datagrams never raise and never knock."""
from hypothesis import given, settings, strategies as st

from peon.gate import quake3 as gate_quake3
from peon.gate.view import Drops, SleepingServer

SERVER = SleepingServer(name="Frag Night", map="oa_dm4", game="Quake3Arena", protocol=71,
                        max_players=12, version="ioq3 1.36", port=27960, start_seconds=20,
                        info=(("g_gametype", "0"), ("gametype", "0"), ("fraglimit", "20")))
M = gate_quake3.MARKER


def info_pairs(text: str) -> dict[str, str]:
    assert text.startswith("\\")
    parts = text[1:].split("\\")
    assert len(parts) % 2 == 0
    return dict(zip(parts[::2], parts[1::2]))


def test_getinfo_answers_infoResponse_with_the_challenge_echoed_first():
    outcome = gate_quake3.answer(SERVER, M + b"getinfo xxx123", Drops())
    head, info = outcome.reply.split(b"\n", 1)
    assert head == M + b"infoResponse" and outcome.knock is None
    assert info.startswith(b"\\challenge\\xxx123\\")
    pairs = info_pairs(info.decode())
    assert pairs["hostname"] == "Frag Night" and pairs["mapname"] == "oa_dm4 (asleep, join to wake)"
    assert (pairs["clients"], pairs["g_humanplayers"], pairs["sv_maxclients"]) == ("0", "0", "12")
    assert (pairs["protocol"], pairs["gamename"], pairs["gametype"]) == ("71", "Quake3Arena", "0")


def test_getstatus_answers_statusResponse_with_no_player_lines():
    outcome = gate_quake3.answer(SERVER, M + b"GETSTATUS 42\n", Drops())  # case-insensitive
    head, info, players = outcome.reply.split(b"\n")
    assert head == M + b"statusResponse" and players == b""
    pairs = info_pairs(info.decode())
    assert pairs["sv_hostname"] == "Frag Night" and pairs["sv_maxclients"] == "12"
    assert pairs["version"] == "ioq3 1.36" and pairs["fraglimit"] == "20"
    assert list(pairs)[-1] == "challenge" and pairs["challenge"] == "42"
    assert gate_quake3.answer(SERVER, M + b"getstatus", Drops()).reply.endswith(b"\\challenge\\\n")


def test_getchallenge_and_connect_knock_and_may_be_told_why():
    getchallenge = M + b"getchallenge -1234567890 Quake3Arena"
    outcome = gate_quake3.answer(SERVER, getchallenge, Drops())
    assert outcome.knock.wake and outcome.knock.how == "connect"
    assert outcome.reply == M + b"print\nstarting, join in 20 s\n"
    assert len(outcome.reply) <= len(getchallenge)
    connect = gate_quake3.answer(SERVER, M + b"connect \x8a\x01\x9f\x33\x71", Drops())
    assert connect.knock.wake and connect.reply is None  # the print would be larger than it


def test_a_join_outside_its_hours_wakes_nothing():
    server = SleepingServer(name="x", window_open=False)
    outcome = gate_quake3.answer(server, M + b"getchallenge 1 Quake3Arena", Drops())
    assert not outcome.knock.wake and outcome.knock.reason == "outside its hours"


def test_what_is_not_a_query_or_a_join_is_dropped_and_counted():
    drops = Drops()
    cases = {
        b"": "empty", M: "short", b"\xfe\xff\xff\xffgetinfo": "bad header",
        b"\x01\x00\x00\x00\x00\x00": "bad header",  # a netchan packet: nobody is in a game
        M + b"rcon secret status": "unknown request", M + b"disconnect": "unknown request",
        M + b"connect ": "short", M + b"getinfo " + b"x" * 129: "bad challenge",
        M + b'getinfo a\\b': "bad challenge", M + b"getinfo a;b": "bad challenge",
        M + b"get\x01info": "bad string", M + b"\n": "bad string",
        M + b"getinfo " + b"x" * 2000: "long", M + b"x" * 20000: "long",
    }
    for datagram, reason in cases.items():
        outcome = gate_quake3.answer(SERVER, datagram, drops)
        assert outcome == gate_quake3.Outcome(), datagram
        assert drops.counts[("quake3", reason)] >= 1, (datagram, reason)
    assert drops.total() == len(cases)


def test_shown_values_hold_nothing_an_info_string_may_not_and_stay_within_1024():
    server = SleepingServer(name='a\\b"c;d\x01', map="m" * 3000, game="g",
                            info=tuple((f"k{i}", "v" * 100) for i in range(50)))
    for request in (b"getinfo c", b"getstatus c"):
        info = gate_quake3.answer(server, M + request, Drops()).reply.split(b"\n")[1]
        assert len(info) < gate_quake3.MAX_INFO_STRING
        assert info_pairs(info.decode("latin-1"))["challenge"] == "c"
        assert b'"' not in info and b";" not in info


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100))
def test_random_datagrams_never_raise_and_never_knock(data):
    outcome = gate_quake3.answer(SERVER, data, Drops())
    if outcome.knock is not None:  # only the two joins knock
        assert data[4:12].lower() == b"connect " or \
            data[4:].split()[0].lower() == b"getchallenge"


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([M + b"getinfo 123", M + b"getstatus xyz\n"]),
       st.integers(0, 20), st.binary(min_size=1, max_size=3), st.booleans())
def test_mutated_queries_never_raise_and_never_knock_unless_they_became_a_join(base, at, patch,
                                                                                insert):
    at = min(at, len(base))
    data = base[:at] + patch + base[at + (0 if insert else len(patch)):]
    outcome = gate_quake3.answer(SERVER, data, Drops())
    assert outcome.knock is None or gate_quake3.is_join(data)


class _Gate:
    def __init__(self, server):
        self.server, self.drops, self.knocks = server, Drops(), []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        outcome = gate_quake3.answer(self.server, data, self.drops)
        if outcome.knock:
            self.knocks.append(outcome.knock)
        if outcome.reply is not None:
            self.transport.sendto(outcome.reply, addr)

    def error_received(self, exc):
        pass

    def connection_lost(self, exc):
        pass


async def _ask_with_opengsq(server):
    import asyncio

    from opengsq.protocols.quake3 import Quake3
    loop = asyncio.get_running_loop()
    transport, gate = await loop.create_datagram_endpoint(
        lambda: _Gate(server), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        client = Quake3("127.0.0.1", port, timeout=2)
        return await client.get_info(), await client.get_status(), gate
    finally:
        transport.close()


def test_opengsq_reads_getinfo_and_getstatus_and_nothing_knocks():
    """A Quake 3 client nobody here wrote (opengsq) reads both answers."""
    import asyncio
    info, status, gate = asyncio.run(_ask_with_opengsq(SERVER))
    assert info["challenge"] == "opengsq" and info["hostname"] == "Frag Night"
    assert info["clients"] == "0" and info["sv_maxclients"] == "12" and info["protocol"] == "71"
    assert status.info["sv_hostname"] == "Frag Night" and status.players == []
    assert status.info["mapname"] == "oa_dm4 (asleep, join to wake)"
    assert gate.knocks == [] and gate.drops.total() == 0
