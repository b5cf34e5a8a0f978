"""The gate's A2S for a sleeping server: python-a2s (a real client) reads its INFO, PLAYER and RULES
through the challenge step; before a challenge nothing larger than the request goes back; every
malformed request is dropped and counted, never an exception."""
import asyncio
import struct

import a2s
from hypothesis import given, settings, strategies as st

from peon.gate import a2s as gate_a2s
from peon.gate.view import Drops, SleepingServer

SERVER = SleepingServer(name="Friday Valheim", map="Meadows", folder="valheim", game="Valheim",
                        app_id=892970, version="0.218.21", max_players=10, port=2456)
SOURCE = ("127.0.0.1", 40000)
INFO = gate_a2s.HEADER + b"TSource Engine Query\x00"


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def challenges(clock=None):
    return gate_a2s.Challenges(secret=b"k" * 32, clock=clock or Clock())


class Gate(asyncio.DatagramProtocol):
    def __init__(self, server):
        self.server, self.challenges, self.drops = server, gate_a2s.Challenges(), Drops()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = gate_a2s.answer(self.server, data, addr, self.challenges, self.drops)
        if reply is not None:
            self.transport.sendto(reply, addr)


async def _ask_with_python_a2s(server):
    loop = asyncio.get_running_loop()
    transport, gate = await loop.create_datagram_endpoint(
        lambda: Gate(server), local_addr=("127.0.0.1", 0))
    address = transport.get_extra_info("sockname")
    try:
        return (await a2s.ainfo(address, timeout=2), await a2s.aplayers(address, timeout=2),
                await a2s.arules(address, timeout=2), gate.drops)
    finally:
        transport.close()


def test_python_a2s_reads_info_players_and_rules_through_the_challenge():
    info, players, rules, drops = asyncio.run(_ask_with_python_a2s(SERVER))
    assert info.server_name == "Friday Valheim"
    assert info.map_name == "Meadows (asleep, join to wake)"
    assert (info.folder, info.game, info.version) == ("valheim", "Valheim", "0.218.21")
    assert (info.player_count, info.max_players, info.bot_count) == (0, 10, 0)
    assert info.port == 2456 and "asleep, join to wake" in info.keywords
    assert info.game_id == 892970 and info.app_id == 892970 & 0xFFFF
    assert players == []
    assert rules["peon_state"] == "asleep" and rules["peon_note"] == "asleep, join to wake"
    assert rules["version"] == "0.218.21"
    assert drops.total() == 0


def test_outside_a_window_the_answer_says_when_it_opens():
    import datetime as dt
    tz = dt.timezone(dt.timedelta(hours=2))
    server = SleepingServer(name="Weekend", map="de_dust2", window_open=False,
                            opens_at=dt.datetime(2026, 1, 9, 18, 0, tzinfo=tz),
                            now=dt.datetime(2026, 1, 9, 10, 0, tzinfo=tz))
    info, _, rules, _ = asyncio.run(_ask_with_python_a2s(server))
    assert info.map_name == "de_dust2 (asleep: wakes at 18:00)"
    assert rules["peon_wake"] == "no"


def _challenge_of(reply):
    assert len(reply) == 9 and reply[:5] == gate_a2s.HEADER + b"A"
    return reply[5:]


def test_before_a_valid_challenge_only_a_9_byte_challenge_goes_back():
    c, drops = challenges(), Drops()
    for request in (INFO, INFO + b"\x00\x00\x00\x00", INFO + b"\xff\xff\xff\xff",
                    gate_a2s.HEADER + b"U\xff\xff\xff\xff", gate_a2s.HEADER + b"V\x00\x00\x00\x00"):
        reply = gate_a2s.answer(SERVER, request, SOURCE, c, drops)
        assert len(reply) <= len(request)
        _challenge_of(reply)
    assert drops.total() == 0


def test_a_challenge_is_bound_to_the_source_and_the_server_port():
    c, drops = challenges(), Drops()
    challenge = _challenge_of(gate_a2s.answer(SERVER, INFO, SOURCE, c, drops))
    assert gate_a2s.answer(SERVER, INFO + challenge, SOURCE, c, drops)[4:5] == b"I"
    # The same challenge from another address or port, or for another server: asked again.
    for source, server in ((("127.0.0.2", 40000), SERVER), (("127.0.0.1", 40001), SERVER),
                           (SOURCE, SleepingServer(name="other", port=2457))):
        _challenge_of(gate_a2s.answer(server, INFO + challenge, source, c, drops))


def test_a_challenge_lives_one_to_two_periods_without_any_state_per_client():
    clock = Clock(1000.0)  # period 30 s: 1000 is in the period starting at 990
    c, drops = challenges(clock), Drops()
    challenge = _challenge_of(gate_a2s.answer(SERVER, INFO, SOURCE, c, drops))
    clock.t = 1049.9  # the next period: still valid
    assert gate_a2s.answer(SERVER, INFO + challenge, SOURCE, c, drops)[4:5] == b"I"
    clock.t = 1050.0  # two periods on: asked again
    assert _challenge_of(gate_a2s.answer(SERVER, INFO + challenge, SOURCE, c, drops)) != challenge
    assert len(c._keys) <= 3


def test_another_secret_gives_other_challenges():
    a = gate_a2s.Challenges(secret=b"a" * 32, clock=Clock()).issue(SOURCE, 2456)
    b = gate_a2s.Challenges(secret=b"b" * 32, clock=Clock()).issue(SOURCE, 2456)
    assert a != b and a not in (b"\x00" * 4, b"\xff" * 4)


def test_strict_parse_drops_and_counts_by_reason():
    c, drops = challenges(), Drops()
    cases = {
        b"": "empty",
        b"\xff\xff\xff": "short",
        b"\xfe\xff\xff\xffTSource Engine Query\x00": "bad header",  # a split packet
        INFO[:-1]: "bad length",
        INFO + b"\x00": "bad length",
        INFO + b"\x00" * 1000: "bad length",
        gate_a2s.HEADER + b"TSource Engine Query!": "bad payload",
        gate_a2s.HEADER + b"TSource Engine Query\x00"[::-1]: "bad payload",
        gate_a2s.HEADER + b"U\x00\x00\x00": "bad length",
        gate_a2s.HEADER + b"V\x00\x00\x00\x00\x00": "bad length",
        gate_a2s.HEADER + b"W": "deprecated request",
        gate_a2s.HEADER + b"i": "unknown request",
    }
    for request, reason in cases.items():
        assert gate_a2s.answer(SERVER, request, SOURCE, c, drops) is None, request
        assert drops.counts[("a2s", reason)] >= 1, (request, reason)
    assert drops.total() == len(cases)


def test_long_strings_are_cut_so_the_answer_stays_one_datagram():
    server = SleepingServer(name="é" * 5000, map="m" * 5000, folder="f" * 5000, game="g" * 5000,
                            version="v" * 5000, max_players=5000, port=70000, app_id=2 ** 40)
    reply = gate_a2s.info_answer(server)
    assert len(reply) < 1400
    assert reply[5:].split(b"\x00")[0].decode("utf-8")  # cut on a character boundary


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_datagrams_never_raise_and_never_answer_more_than_they_asked(data):
    drops = Drops()
    reply = gate_a2s.answer(SERVER, data, SOURCE, challenges(), drops)
    assert reply is None or len(reply) <= len(data)
    assert drops.total() == (reply is None)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([INFO, INFO + b"abcd", gate_a2s.HEADER + b"U\xff\xff\xff\xff",
                        gate_a2s.HEADER + b"V\x00\x00\x00\x00"]),
       st.integers(0, 40), st.binary(min_size=1, max_size=3), st.booleans())
def test_mutated_requests_never_raise_and_never_amplify(base, at, patch, insert):
    at = min(at, len(base))
    data = base[:at] + patch + base[at + (0 if insert else len(patch)):]
    reply = gate_a2s.answer(SERVER, data, SOURCE, challenges(), Drops())
    assert reply is None or len(reply) <= len(data)


def test_a_valid_answer_parses_as_python_a2s_does():
    """The INFO answer's fields at the offsets the Source format puts them."""
    body = gate_a2s.info_answer(SERVER)[5:]
    strings = body[1:].split(b"\x00", 4)
    assert strings[0] == b"Friday Valheim"
    rest = strings[4]
    app_id, players, most = struct.unpack_from("<HBB", rest)
    assert (app_id, players, most) == (892970 & 0xFFFF, 0, 10)


def test_a2s_answers_per_second_for_1000_sleeping_servers():
    """The pure cost of the whole answer path (parse, challenge check, answer) for 1,000 servers
    from 1,000 sources; the issue's end-to-end target is 5,000 a second, this is a floor far
    under what it measures (`pytest -s` prints the figure)."""
    import time
    servers = [SleepingServer(name=f"server {i}", map="Meadows", folder="valheim", game="Valheim",
                              app_id=892970, version="0.218.21", max_players=10, port=20000 + i)
               for i in range(1000)]
    c, drops = gate_a2s.Challenges(), Drops()
    asks = []
    for i, server in enumerate(servers):
        source = (f"10.0.{i // 250}.{i % 250}", 40000 + i)
        challenge = _challenge_of(gate_a2s.answer(server, INFO, source, c, drops))
        asks += [(server, INFO, source), (server, INFO + challenge, source),
                 (server, gate_a2s.HEADER + b"U" + challenge, source),
                 (server, gate_a2s.HEADER + b"V" + challenge, source)]
    gate_a2s.info_answer.cache_clear()
    gate_a2s.rules_answer.cache_clear()
    start = time.perf_counter()
    for _ in range(5):
        for server, request, source in asks:
            assert gate_a2s.answer(server, request, source, c, drops) is not None
    rate = 5 * len(asks) / (time.perf_counter() - start)
    print(f"\nA2S: {rate:,.0f} answers/s for 1,000 sleeping servers (pure, in-process)")
    assert drops.total() == 0 and rate > 20_000
