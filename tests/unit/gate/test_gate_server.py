"""The gate's server process on 127.0.0.1: real clients nobody here wrote (python-a2s, opengsq) and
the project's own Minecraft client read sleeping servers through it; queries and status pings
wake nothing, joins knock once (debounced) with who knocked; garbage, half handshakes and slow
clients are dropped or closed by the caps, never a crash; servers come and go at run time."""
import asyncio
import random
import socket
import struct

import a2s
import pytest

from peon.gate import quake3 as gate_quake3
from peon.shared import players
from peon.gate.server import Binding, Gate, Limits
from peon.gate.view import SleepingServer
from peon.shared.players import varint

LOCAL = "127.0.0.1"
VALHEIM = SleepingServer(name="Friday Valheim", map="Meadows", folder="valheim", game="Valheim",
                         app_id=892970, version="0.218.21", max_players=10, port=2456)
CREATIVE = SleepingServer(name="Creative", version="1.21.4", protocol=769, max_players=20,
                          port=25565, start_seconds=45)
FRAGS = SleepingServer(name="Frag Night", map="oa_dm4", game="Quake3Arena", protocol=71,
                       max_players=12, port=27960, start_seconds=20)
RUST = SleepingServer(name="Rusty", port=28015)
ROOMY = Limits(source_rate=10000, source_burst=10000)  # tests that ask many times a second
Q3 = gate_quake3.MARKER


def udp(protocol, role="game"):
    return Binding(LOCAL, 0, "udp", role, protocol)


def tcp(protocol):
    return Binding(LOCAL, 0, "tcp", "game", protocol)


class Knocks(list):
    def __call__(self, key, knock, source):
        self.append((key, knock, source))


async def gate_with(limits=ROOMY, clock=None, **servers):
    """A Gate serving `servers` (key -> (view, [bindings])), and what it hands on."""
    knocks = Knocks()
    gate = Gate(knocks, limits, **({"clock": clock} if clock else {}))
    for key, (view, bindings) in servers.items():
        await gate.set_server(key, view, bindings)
    return gate, knocks


def port(gate, key, binding):
    return gate.bound(key)[binding][1]


async def udp_ask(port_, data, timeout=0.5):
    """One datagram to 127.0.0.1:port_, and the answer (None when none came in `timeout`)."""
    loop = asyncio.get_running_loop()
    answers = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            answers.put_nowait(data)

        def error_received(self, exc):
            answers.put_nowait(None)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(LOCAL, port_))
    try:
        transport.sendto(data)
        try:
            return await asyncio.wait_for(answers.get(), timeout)
        except TimeoutError:
            return None
    finally:
        transport.close()


async def settle(gate, seconds=2.0):
    """Until the gate's counts stop changing (datagrams in flight are handled)."""
    before = None
    for _ in range(int(seconds / 0.05)):
        now = gate.stats()
        if now == before:
            return
        before = now
        await asyncio.sleep(0.05)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


# --- A2S ------------------------------------------------------------------------------------

def test_python_a2s_reads_info_players_and_rules_and_20_queries_wake_nothing():
    query, game = udp("a2s", "query"), udp("a2s")

    async def scenario():
        gate, knocks = await gate_with(valheim=(VALHEIM, [query, game]))
        address = (LOCAL, port(gate, "valheim", query))
        info = await a2s.ainfo(address, timeout=2)
        on, rules = await a2s.aplayers(address, timeout=2), await a2s.arules(address, timeout=2)
        for _ in range(20):
            assert (await a2s.ainfo(address, timeout=2)).player_count == 0
        # Source games answer A2S on the game port too: a query there wakes nothing either.
        on_game_port = await a2s.ainfo((LOCAL, port(gate, "valheim", game)), timeout=2)
        await gate.close()
        return info, on, rules, on_game_port, knocks, gate.stats()

    info, on, rules, on_game_port, knocks, stats = run(scenario())
    assert info.server_name == "Friday Valheim" and info.map_name == "Meadows (asleep, join to wake)"
    assert (info.player_count, info.max_players, info.game) == (0, 10, "Valheim")
    assert on == [] and rules["peon_state"] == "asleep" and rules["peon_wake"] == "on join"
    assert on_game_port.server_name == "Friday Valheim"
    assert knocks == [] and not any(k[0] == "knock" for k in stats)
    assert stats[("answer", "a2s")] >= 2 * 24 and not any(k[0] == "error" for k in stats)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_datagram_on_the_game_port_wakes_once_per_debounce_and_says_who():
    game = udp("a2s")
    clock = Clock()

    async def scenario():
        gate, knocks = await gate_with(clock=clock, valheim=(VALHEIM, [udp("a2s", "query"), game]))
        game_port = port(gate, "valheim", game)
        for _ in range(5):  # a client resends its join
            assert await udp_ask(game_port, b"\x01valheim-join\x00\x07", 0.05) is None
        await settle(gate)
        first = list(knocks)
        clock.t += Limits().knock_seconds + 1
        await udp_ask(game_port, b"\x01valheim-join\x00\x07", 0.05)
        await settle(gate)
        await gate.close()
        return first, knocks, gate.stats()

    first, knocks, stats = run(scenario())
    [(key, knock, source)] = first
    assert key == "valheim" and knock.wake and knock.how == "datagram" and source[0] == LOCAL
    assert len(knocks) == 2 and stats[("knock", "a2s", "join")] == 6
    assert stats[("knock handed on", "a2s")] == 2


def test_the_per_source_limit_answers_a_burst_then_drops_and_counts():
    query = udp("a2s", "query")

    async def scenario():
        gate, _ = await gate_with(limits=Limits(), clock=Clock(), v=(VALHEIM, [query]))
        answers = [await udp_ask(port(gate, "v", query), b"\xff\xff\xff\xffU\xff\xff\xff\xff", 0.1)
                   for _ in range(25)]  # the clock stands still: no token comes back
        await gate.close()
        return answers, gate.stats()

    answers, stats = run(scenario())
    assert sum(a is not None for a in answers) == Limits().source_burst == 20
    assert all(len(a) == 9 for a in answers if a)  # a challenge, no larger than the request
    assert stats[("drop", "a2s", "rate limited")] == 5


# --- Minecraft ------------------------------------------------------------------------------

def packet(packet_id, body):
    data = varint(packet_id) + body
    return varint(len(data)) + data


def string(text):
    raw = text.encode()
    return varint(len(raw)) + raw


def handshake(next_state):
    return packet(0, varint(769) + string("play.example.org") + struct.pack(">H", 25565)
                  + varint(next_state))


async def tcp_exchange(port_, data, pause=0.0, read_for=3.0, eof=False):
    """Send `data` (a byte at a time with `pause` between when given; then end the sending side
    when `eof`), then read what comes back until the gate closes; (answer, seconds until closed)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(LOCAL, port_)
    start = loop.time()
    try:
        if pause:
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await asyncio.sleep(pause)
                if reader.at_eof() or writer.is_closing():
                    break
        else:
            writer.write(data)
        if eof:
            writer.write_eof()
        answer = await asyncio.wait_for(reader.read(65536 * 2), read_for)
        while True:
            more = await asyncio.wait_for(reader.read(65536), read_for)
            if not more:
                break
            answer += more
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
    return answer, loop.time() - start


def test_the_projects_client_reads_the_status_and_a_login_knocks_with_the_name():
    mc = tcp("minecraft")

    async def scenario():
        gate, knocks = await gate_with(mc=(CREATIVE, [mc]))
        mc_port = port(gate, "mc", mc)
        status = await players.query("minecraft", LOCAL, mc_port)
        after_status = list(knocks)
        login = handshake(2) + packet(0, string("Alex") + b"\x00" * 16)
        answer, _ = await tcp_exchange(mc_port, login)
        await gate.close()
        return status, after_status, answer, knocks

    status, after_status, answer, knocks = run(scenario())
    assert status == players.Players(online=0, max=20) and after_status == []
    assert b"Creative is starting, join again in 45 s" in answer
    [(key, knock, source)] = knocks
    assert key == "mc" and knock.wake and knock.player == "Alex" and source[0] == LOCAL


def test_half_handshakes_and_slow_clients_are_closed_by_the_time_cap():
    mc = tcp("minecraft")

    async def scenario():
        gate, knocks = await gate_with(limits=Limits(tcp_seconds=0.5, source_burst=100),
                                       mc=(CREATIVE, [mc]))
        mc_port = port(gate, "mc", mc)
        half = handshake(2)[:7]
        half_answer, half_took = await tcp_exchange(mc_port, half)
        login = handshake(2) + packet(0, string("Alex") + b"\x00" * 16)
        slow_answer, slow_took = await tcp_exchange(mc_port, login, pause=0.05)
        await gate.close()
        return half_answer, half_took, slow_answer, slow_took, knocks, gate.stats()

    half_answer, half_took, slow_answer, slow_took, knocks, stats = run(scenario())
    assert half_answer == b"" and 0.4 < half_took < 2.0
    assert slow_answer == b"" and 0.4 < slow_took < 2.0  # 60 bytes at 20 a second: cut at 0.5 s
    assert knocks == [] and stats[("closed", "minecraft", "time cap")] == 2


def test_the_byte_cap_closes_a_connection_before_it_is_read_further():
    mc = tcp("minecraft")

    async def scenario():
        gate, knocks = await gate_with(limits=Limits(tcp_bytes=10), mc=(CREATIVE, [mc]))
        login = handshake(2) + packet(0, string("Alex") + b"\x00" * 16)  # 40 bytes: over 10
        answer, _ = await tcp_exchange(port(gate, "mc", mc), login)
        await gate.close()
        return answer, knocks, gate.stats()

    answer, knocks, stats = run(scenario())
    assert answer == b"" and knocks == [] and stats[("closed", "minecraft", "byte cap")] == 1


def test_connections_per_source_are_capped():
    mc = tcp("minecraft")

    async def scenario():
        gate, _ = await gate_with(limits=Limits(tcp_per_source=2, source_burst=100),
                                  mc=(CREATIVE, [mc]))
        mc_port = port(gate, "mc", mc)
        held = [await asyncio.open_connection(LOCAL, mc_port) for _ in range(2)]
        await asyncio.sleep(0.1)
        third, took = await tcp_exchange(mc_port, b"", read_for=2.0)
        still_open = [not reader.at_eof() for reader, _ in held]
        for _, writer in held:
            writer.close()
        await gate.close()
        return third, took, still_open, gate.stats()

    third, took, still_open, stats = run(scenario())
    assert third == b"" and took < 1.0 and still_open == [True, True]
    assert stats[("closed", "minecraft", "too many connections")] == 1


def test_a_generic_tcp_game_is_woken_by_bytes_not_by_a_bare_connect_or_a_scanner():
    game = tcp("generic-tcp")

    async def scenario():
        gate, knocks = await gate_with(rust=(RUST, [game]))
        game_port = port(gate, "rust", game)
        await tcp_exchange(game_port, b"", eof=True)            # a connect scan
        await tcp_exchange(game_port, b"GET / HTTP/1.1\r\n\r\n")  # a web scanner
        before = list(knocks)
        answer, _ = await tcp_exchange(game_port, b"\x05rust-client-hello")
        await gate.close()
        return before, answer, knocks

    before, answer, knocks = run(scenario())
    assert before == [] and answer == b""
    [(key, knock, _)] = knocks
    assert key == "rust" and knock.how == "tcp" and knock.wake


# --- Quake 3 --------------------------------------------------------------------------------

def test_opengsq_reads_getinfo_and_getstatus_and_getchallenge_knocks():
    from opengsq.protocols.quake3 import Quake3
    q3 = udp("quake3")

    async def scenario():
        gate, knocks = await gate_with(frags=(FRAGS, [q3]))
        q3_port = port(gate, "frags", q3)
        client = Quake3(LOCAL, q3_port, timeout=2)
        info, status = await client.get_info(), await client.get_status()
        after_queries = list(knocks)
        join = Q3 + b"getchallenge -1234567890 Quake3Arena"
        printed = await udp_ask(q3_port, join)
        await settle(gate)
        await gate.close()
        return info, status, after_queries, printed, knocks

    info, status, after_queries, printed, knocks = run(scenario())
    assert info["hostname"] == "Frag Night" and info["clients"] == "0"
    assert status.info["mapname"] == "oa_dm4 (asleep, join to wake)" and status.players == []
    assert after_queries == [] and printed == Q3 + b"print\nstarting, join in 20 s\n"
    [(key, knock, _)] = knocks
    assert key == "frags" and knock.wake and knock.how == "connect"


# --- garbage, run-time changes, failures ----------------------------------------------------

def test_a_flood_of_garbage_wakes_nothing_and_the_gate_keeps_answering():
    query, q3, mc, generic = udp("a2s", "query"), udp("quake3"), tcp("minecraft"), \
        udp("generic-udp")
    rng = random.Random(25)
    scans = [b"", b"\x00" * 40, b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x02\x00",
             b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01"
             b"\x00\x01", b"abc", b"   \r\n"]

    async def scenario():
        gate, knocks = await gate_with(valheim=(VALHEIM, [query]), frags=(FRAGS, [q3]),
                                       mc=(CREATIVE, [mc]), gen=(RUST, [generic]))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=(LOCAL, 0))
        targets = [port(gate, "valheim", query), port(gate, "frags", q3)]
        for i in range(3000):
            size = rng.choice((0, 1, 4, 5, 9, 13, 25, 29, 100, 1400))
            data = bytes(rng.getrandbits(8) for _ in range(size))
            if i % 3 == 0:  # starting as the protocols do, to get past their first checks
                data = rng.choice((b"\xff\xff\xff\xff", b"\xff\xff\xff\xffget")) + data
            transport.sendto(data, (LOCAL, targets[i % 2]))
            await asyncio.sleep(0)  # a turn for the gate: no loss in the socket's buffer
        for scan in scans:
            transport.sendto(scan, (LOCAL, port(gate, "gen", generic)))
        transport.close()
        for _ in range(40):
            await tcp_exchange(port(gate, "mc", mc),
                               bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))),
                               read_for=1.0, eof=True)
        await settle(gate)
        info = await a2s.ainfo((LOCAL, port(gate, "valheim", query)), timeout=2)
        status = await players.query("minecraft", LOCAL, port(gate, "mc", mc))
        await gate.close()
        return knocks, info, status, gate.stats()

    knocks, info, status, stats = run(scenario())
    assert knocks == [] and not any(k[0] in ("knock", "error") for k in stats)
    drops = sum(n for k, n in stats.items() if k[0] == "drop")
    assert drops > 1000  # most of it, counted by reason (some random 9 bytes are a PLAYER ask)
    assert info.server_name == "Friday Valheim" and status == players.Players(0, 20)


def test_a_burst_is_answered_whole_and_a_datagram_over_any_protocols_size_is_dropped():
    """The gate reads its UDP sockets itself (a batch a readiness callback, at most one byte
    past Quake 3's MAX_MSGLEN a datagram): datagrams sent back to back without a turn for the
    gate are all answered, and one of 60,000 bytes is dropped, not read whole or answered."""
    query, q3 = udp("a2s", "query"), udp("quake3")
    ask = b"\xff\xff\xff\xffTSource Engine Query\x00"

    async def scenario():
        gate, knocks = await gate_with(valheim=(VALHEIM, [query]), frags=(FRAGS, [q3]))
        got = []

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.append((addr[1], data))

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Client, local_addr=(LOCAL, 0))
        a2s_port, q3_port = port(gate, "valheim", query), port(gate, "frags", q3)
        transport.sendto(ask + b"\x00" * 60000, (LOCAL, a2s_port))
        transport.sendto(b"\xff\xff\xff\xffgetstatus " + b"x" * 60000, (LOCAL, q3_port))
        for _ in range(50):
            transport.sendto(ask, (LOCAL, a2s_port))  # no turn for the gate in between
        await settle(gate)
        transport.close()
        await gate.close()
        return got, knocks, gate.stats()

    got, knocks, stats = run(scenario())
    assert len(got) == 50 and {len(data) for _, data in got} == {9}  # each a challenge
    assert all(data[4:5] == b"A" for _, data in got)
    assert knocks == [] and not any(k[0] == "error" for k in stats)
    assert sum(n for k, n in stats.items() if k[0] == "drop") == 2


def test_a_server_removed_at_run_time_stops_answering_while_others_go_on():
    query = udp("a2s", "query")
    ask = b"\xff\xff\xff\xffU\xff\xff\xff\xff"

    async def scenario():
        gate, _ = await gate_with(a=(VALHEIM, [query]), b=(VALHEIM, [query]))
        a_port, b_port = port(gate, "a", query), port(gate, "b", query)
        before = await udp_ask(a_port, ask), await udp_ask(b_port, ask)
        await gate.remove_server("a")
        after = await udp_ask(a_port, ask), await udp_ask(b_port, ask)
        freed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        freed.bind((LOCAL, a_port))  # its port is closed: another server may take it
        freed.close()
        await gate.set_server("b", SleepingServer(name="Renamed", port=2456), [query])
        renamed = await a2s.ainfo((LOCAL, b_port), timeout=2)
        await gate.close()
        return before, after, renamed

    before, after, renamed = run(scenario())
    assert before[0] and before[1] and after[0] is None and after[1] is not None
    assert renamed.server_name == "Renamed"  # updated in place, on the same port


def test_a_changed_view_changes_the_answers_encoded_for_it():
    """The gate encodes a server's INFO and RULES once per view: a new view (renamed, its window
    closed) is what the next query reads, on the same port."""
    query = udp("a2s", "query")
    closed = SleepingServer(name="Friday Valheim (closed)", map="Meadows", folder="valheim",
                            game="Valheim", app_id=892970, version="0.219.1", max_players=10,
                            port=2456, window_open=False)

    async def scenario():
        gate, _ = await gate_with(v=(VALHEIM, [query]))
        address = (LOCAL, port(gate, "v", query))
        before = await a2s.ainfo(address, timeout=2), await a2s.arules(address, timeout=2)
        await gate.set_server("v", closed, [query])
        after = await a2s.ainfo(address, timeout=2), await a2s.arules(address, timeout=2)
        await gate.set_server("v", VALHEIM, [query])  # and back
        again = await a2s.ainfo(address, timeout=2)
        await gate.close()
        return before, after, again

    (info, rules), (info2, rules2), again = run(scenario())
    assert info.server_name == "Friday Valheim" and rules["peon_wake"] == "on join"
    assert info2.server_name == "Friday Valheim (closed)" and info2.version == "0.219.1"
    assert info2.map_name == "Meadows (asleep: outside its hours)"
    assert rules2["peon_wake"] == "no" and rules2["version"] == "0.219.1"
    assert again.server_name == "Friday Valheim" and again.map_name == VALHEIM.shown_map


def test_the_global_limit_drops_what_is_over_it_whatever_the_source():
    query = udp("a2s", "query")
    limits = Limits(source_rate=10000, source_burst=10000, global_rate=1, global_burst=3)

    async def scenario():
        gate, _ = await gate_with(limits=limits, clock=Clock(), a=(VALHEIM, [query]),
                                  b=(RUST, [query]))
        ports = [port(gate, "a", query), port(gate, "b", query)]
        answers = [await udp_ask(ports[i % 2], b"\xff\xff\xff\xffU\xff\xff\xff\xff", 0.1)
                   for i in range(6)]  # the clock stands still: no token comes back
        await gate.close()
        return answers, gate.stats()

    answers, stats = run(scenario())
    assert [a is not None for a in answers] == [True] * 3 + [False] * 3
    assert stats[("drop", "a2s", "rate limited")] == 3


def test_a_port_that_cannot_be_bound_changes_nothing():
    query = udp("a2s", "query")

    async def scenario():
        gate, _ = await gate_with(a=(VALHEIM, [query]))
        taken = port(gate, "a", query)
        with pytest.raises(OSError):
            await gate.set_server("b", VALHEIM, [udp("a2s"), Binding(LOCAL, taken, "udp", "query",
                                                                      "a2s")])
        answered = await udp_ask(taken, b"\xff\xff\xff\xffU\xff\xff\xff\xff")
        await gate.close()
        return gate, answered

    gate, answered = run(scenario())
    assert "b" not in gate.views and answered is not None


@pytest.mark.parametrize("is_async", [True, False])
def test_a_failing_on_knock_is_counted_not_fatal(is_async):
    game = udp("generic-udp")
    called = []

    def fail(key, knock, source):
        called.append(key)
        raise RuntimeError("the operator is away")

    async def fail_later(key, knock, source):
        fail(key, knock, source)

    async def scenario():
        gate = Gate(fail_later if is_async else fail, ROOMY)
        await gate.set_server("g", RUST, [game])
        await udp_ask(port(gate, "g", game), b"hello, world", 0.05)
        await settle(gate)
        await asyncio.sleep(0.05)
        await udp_ask(port(gate, "g", game), b"hello again", 0.05)  # still serving
        await settle(gate)
        await gate.close()
        return gate.stats()

    stats = run(scenario())
    assert called == ["g"] and stats[("error", "on_knock")] == 1
    assert stats[("knock", "generic-udp", "join")] == 2  # the second counted, debounced


@pytest.mark.parametrize("fields", [
    ("127.0.0.1", 1, "sctp", "game", "a2s"), ("127.0.0.1", 1, "udp", "rcon", "a2s"),
    ("127.0.0.1", 1, "udp", "game", "minecraft"), ("127.0.0.1", 1, "tcp", "game", "quake3"),
    ("127.0.0.1", 70000, "udp", "game", "a2s"),
])
def test_a_binding_that_cannot_work_is_refused_with_its_fields(fields):
    with pytest.raises(ValueError):
        Binding(*fields)


def test_the_counts_are_exposed_as_prometheus_counters():
    from prometheus_client import CollectorRegistry, generate_latest

    from peon.gate.server import Collector
    game, query = udp("a2s"), udp("a2s", "query")

    async def scenario():
        gate, _ = await gate_with(v=(VALHEIM, [query, game]))
        await udp_ask(port(gate, "v", query), b"\xff\xff\xff\xffU\xff\xff\xff\xff")
        await udp_ask(port(gate, "v", query), b"junk", 0.05)
        await udp_ask(port(gate, "v", game), b"a join, perhaps", 0.05)
        await settle(gate)
        await gate.close()
        return gate

    registry = CollectorRegistry()
    registry.register(Collector(run(scenario())))
    text = generate_latest(registry).decode()
    assert 'peon_gate_answers_total{protocol="a2s"} 1.0' in text
    assert 'peon_gate_drops_total{protocol="a2s",reason="short"} 1.0' in text
    assert 'peon_gate_knocks_total{outcome="join",protocol="a2s"} 1.0' in text or \
        'peon_gate_knocks_total{protocol="a2s",outcome="join"} 1.0' in text
    assert 'peon_gate_knocks_handed_on_total{protocol="a2s"} 1.0' in text


def test_the_servers_file_is_parsed_into_views_or_refused_naming_the_field():
    from peon.gate.server import parse_servers
    servers = parse_servers('{"ns/a": {"view": {"name": "A", "wake_players": ["Alex"], '
                            '"info": [["g_gametype", "0"]]}, "bindings": [{"address": '
                            '"127.0.0.1", "port": 27960, "transport": "udp", "role": "game", '
                            '"protocol": "quake3"}]}}')
    view, [binding] = servers["ns/a"]
    assert view.wake_players == frozenset({"Alex"}) and view.info == (("g_gametype", "0"),)
    assert binding == Binding(LOCAL, 27960, "udp", "game", "quake3")
    with pytest.raises(ValueError, match="'ns/b'.*colour"):
        parse_servers('{"ns/b": {"view": {"name": "B", "colour": "red"}, "bindings": []}}')
    with pytest.raises(ValueError, match="'ns/c'.*bindings"):
        parse_servers('{"ns/c": {"view": {"name": "C"}}}')
    with pytest.raises(ValueError, match="'ns/d'"):
        parse_servers('{"ns/d": {"view": {"name": "D"}, "bindings": [{"address": "127.0.0.1", '
                      '"port": 1, "transport": "udp", "role": "game", "protocol": "minecraft"}]}}')


def test_peon_gate_serves_the_file_and_logs_a_knock_without_its_payload(tmp_path):
    import json
    import subprocess
    import sys
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCAL, 0))
        free = probe.getsockname()[1]
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({"ns/rust": {"view": {"name": "Rusty"}, "bindings": [
        {"address": LOCAL, "port": free, "transport": "udp", "role": "game",
         "protocol": "generic-udp"}]}}))
    gate = subprocess.Popen([sys.executable, "-c", "from peon.gate.main import main; main()",
                             str(servers)], stderr=subprocess.PIPE, text=True)
    try:
        assert "ns/rust on" in gate.stderr.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"secret-join-token-xyz", (LOCAL, free))
        assert "knock on ns/rust from 127.0.0.1: join (datagram)" in gate.stderr.readline()
    finally:
        gate.terminate()
        _, rest = gate.communicate(timeout=10)
    assert "secret-join-token" not in rest
