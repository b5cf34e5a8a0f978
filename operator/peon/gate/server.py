"""The gate's server process: one asyncio loop that stands in for many sleeping servers (issue 25).

The protocol modules (a2s, minecraft, quake3, protocols) decide; this module
only moves bytes between them and sockets, and keeps the counts. Still without Kubernetes: the
operator's layer (later) tells the gate which servers sleep (`Gate.set_server`, `remove_server`)
and receives the knocks (`on_knock`).

    gate = Gate(on_knock)                      # on_knock(server_key, Knock, (address, port))
    await gate.set_server("ns/name", view, [Binding("127.0.0.1", 27015, "udp", "query", "a2s"),
                                            Binding("127.0.0.1", 2456, "udp", "game", "a2s")])
    gate.bound("ns/name")                      # {Binding: (address, port)}: port 0 binds a free one
    await gate.remove_server("ns/name")
    await gate.close()

A listener per (address, port, transport) of a server. What each does with what arrives:
- UDP, role query, protocol a2s: a2s.answer (the challenge step; nothing larger than the
  request before it). Other protocols have no query port of their own: dropped ("unknown request").
- UDP, role game: quake3: quake3.answer (answers getinfo/getstatus, knocks on getchallenge/
  connect); a2s: an A2S query there is answered (Source games answer A2S on the game port too),
  anything that passes protocols.is_wake_attempt knocks; generic-udp: only the knock.
  Nothing is sent back for a knock except Quake 3's print, which is never larger than the knock.
- TCP, minecraft: a minecraft.Conversation per connection; generic-tcp: the first bytes (up
  to GENERIC_TCP_PEEK, or what came before the time cap) knock when is_wake_attempt says so, then
  the connection is closed. A TCP connection lives at most `Limits.tcp_seconds` and reads at most
  `Limits.tcp_bytes`; a source holds at most `tcp_per_source` connections, the gate `tcp_total`.

Rate limits: every datagram and every new connection takes a token from a bucket per (source
address, server) (ioquake3 keys its limit by address per server: SVC_RateLimitAddress) and from
one global bucket, before anything is parsed. Behind a Service whose externalTrafficPolicy is
Cluster every source is the node's address (SNAT); the operator's layer must set it to Local for
a per-source limit to mean a player.

Knocks: every knock is counted; a knock is handed to `on_knock` at most once per server and
outcome ("join", or why not) per `Limits.knock_seconds` (a client resends its join a few times a
second: one wake is enough). `on_knock` may be a function or a coroutine function; what it raises
is caught, counted and logged.

Never a crash on bad input: every handler's exception is caught, counted as ("error", protocol)
and logged with its type only (never a payload).

Counts: `Gate.stats()`; `Collector(gate)` exposes them to prometheus_client as peon_gate_*_total.
`peon-gate` (main.py): `--cluster` serves what the operator puts at the gate (cluster.py);
with a servers file, the servers it names (`serve`), logging the knocks, by hand.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import a2s, minecraft, protocols, quake3
from .view import Drops, Knock, RateLimiter, Refused, SleepingServer, knock

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp")
GENERIC_TCP_PEEK = 256   # bytes of a generic TCP game's first message looked at
READ_CHUNK = 4096
# A datagram is read up to one byte past the largest any protocol here takes (Quake 3's
# MAX_MSGLEN): a longer one is cut, and is still too long where a length is checked.
UDP_READ = quake3.MAX_MSGLEN + 1
UDP_BATCH = 16           # datagrams read from one socket in one readiness callback, at most
Source = tuple  # (address, port) as asyncio gives it


@dataclass(frozen=True)
class Binding:
    """One port of a sleeping server: where the gate listens for it, and what it speaks there."""
    address: str
    port: int            # 0: a free port (tests, benches); `Gate.bound` tells which
    transport: str       # "udp" or "tcp"
    role: str            # "game" or "query"
    protocol: str        # one of protocols.PROTOCOLS

    def __post_init__(self):
        if self.transport not in TRANSPORTS or self.role not in protocols.PORT_ROLES \
                or self.protocol not in protocols.PROTOCOLS:
            raise ValueError(f"unknown transport, role or protocol in {self}")
        if (self.protocol == "minecraft" or self.protocol == "generic-tcp") != \
                (self.transport == "tcp"):
            raise ValueError(f"{self.protocol} is not spoken over {self.transport}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")


@dataclass(frozen=True)
class Limits:
    source_rate: float = 10.0     # datagrams or connections a second per (source, server)
    source_burst: float = 20.0
    global_rate: float = 20000.0  # for the whole gate
    global_burst: float = 2000.0
    tcp_seconds: float = 5.0      # a connection's whole life
    tcp_bytes: int = 8192         # what is read of one connection
    tcp_per_source: int = 8
    tcp_total: int = 512
    knock_seconds: float = 30.0   # one knock per server and outcome handed on in this time


OnKnock = Callable[[str, Knock, Source], Any]


class Gate:
    def __init__(self, on_knock: OnKnock | None = None, limits: Limits = Limits(),
                 clock: Callable[[], float] = time.monotonic):
        self.on_knock, self.limits, self.clock = on_knock, limits, clock
        self.views: dict[str, SleepingServer] = {}
        # Each server's A2S answers, encoded once per view (set_server), not per datagram.
        self.prepared: dict[str, a2s.Prepared] = {}
        self.listeners: dict[str, dict[Binding, _Listener]] = {}
        self.counts: collections.Counter = collections.Counter()
        self.drops = Drops()
        self.challenges = a2s.Challenges()
        self.per_source = RateLimiter(limits.source_rate, limits.source_burst, clock)
        self.overall = RateLimiter(limits.global_rate, limits.global_burst, clock)
        self.last_knock: dict[tuple[str, bool, str], float] = {}
        self.tcp_by_source: collections.Counter = collections.Counter()
        self.tcp_open = 0
        self._tasks: set[asyncio.Task] = set()

    # --- servers added, updated and removed at run time ------------------------------------

    async def set_server(self, key: str, view: SleepingServer, bindings: list[Binding]) -> None:
        """Add the server, or update its view and ports: listeners kept stay open, new ones are
        bound before old ones close; when one cannot be bound, nothing changes and it raises."""
        current = self.listeners.get(key, {})
        wanted = list(dict.fromkeys(bindings))
        opened: dict[Binding, _Listener] = {}
        try:
            for binding in wanted:
                if binding not in current:
                    opened[binding] = await _Listener.open(self, key, binding)
        except BaseException:
            for listener in opened.values():
                await listener.close()
            raise
        if self.views.get(key) is not view:
            self.prepared[key] = a2s.Prepared(view)
        self.views[key] = view
        self.listeners[key] = {b: current.get(b) or opened[b] for b in wanted}
        for binding, listener in current.items():
            if binding not in self.listeners[key]:
                await listener.close()

    async def remove_server(self, key: str) -> None:
        for listener in self.listeners.pop(key, {}).values():
            await listener.close()
        self.views.pop(key, None)
        self.prepared.pop(key, None)
        self.last_knock = {k: t for k, t in self.last_knock.items() if k[0] != key}

    async def close(self) -> None:
        for key in list(self.listeners):
            await self.remove_server(key)
        for task in list(self._tasks):
            task.cancel()

    def bound(self, key: str) -> dict[Binding, tuple[str, int]]:
        return {b: listener.sockname for b, listener in self.listeners.get(key, {}).items()}

    def stats(self) -> collections.Counter:
        """All counts: ("answer", protocol), ("drop", protocol, reason), ("knock", protocol,
        reason), ("knock handed on", protocol), ("closed", protocol, why), ("error", where)."""
        out = collections.Counter(self.counts)
        for (protocol, reason), n in self.drops.counts.items():
            out[("drop", protocol, reason)] += n
        return out

    # --- what every packet and connection goes through ------------------------------------

    def admit(self, key: str, protocol: str, source: Source) -> bool:
        now = self.clock()
        if not self.per_source.allow((source[0], key), now) or not self.overall.allow(None, now):
            self.drops.add(protocol, "rate limited")
            return False
        return True

    def knocked(self, key: str, protocol: str, knock: Knock, source: Source) -> None:
        self.counts[("knock", protocol, knock.reason)] += 1
        now = self.clock()
        last = self.last_knock.get((key, knock.wake, knock.reason))
        if last is not None and now - last < self.limits.knock_seconds:
            return
        self.last_knock[(key, knock.wake, knock.reason)] = now
        self.counts[("knock handed on", protocol)] += 1
        log.info("knock on %s from %s: %s (%s%s)", key, source[0], knock.reason, knock.how,
                 f", player {knock.player}" if knock.player else "")
        if self.on_knock is None:
            return
        try:
            result = self.on_knock(key, knock, source)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await_knock(result))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception as e:
            self._error("on_knock", e)

    async def _await_knock(self, result) -> None:
        try:
            await result
        except Exception as e:
            self._error("on_knock", e)

    def _error(self, where: str, e: BaseException) -> None:
        self.counts[("error", where)] += 1
        log.warning("gate: %s failed: %s", where, type(e).__name__)  # never the payload

    # --- UDP ------------------------------------------------------------------------------

    def datagram(self, key: str, binding: Binding, data: bytes, source: Source) -> bytes | None:
        """The reply to one datagram (None: nothing), the knock handed on."""
        prepared = self.prepared.get(key)
        if prepared is None or not self.admit(key, binding.protocol, source):
            return None
        view, protocol = prepared.server, binding.protocol
        if binding.role == "query":
            if protocol != "a2s":
                self.drops.add(protocol, "unknown request")
                return None
            return self._answered(protocol, a2s.answer(view, data, source, self.challenges,
                                                       self.drops, prepared))
        if protocol == "quake3":
            outcome = quake3.answer(view, data, self.drops)
            if outcome.knock is not None:
                self.knocked(key, protocol, outcome.knock, source)
            return self._answered(protocol, outcome.reply)
        if protocol == "a2s" and a2s.is_query(data):
            return self._answered(protocol, a2s.answer(view, data, source, self.challenges,
                                                       self.drops, prepared))
        if protocols.is_wake_attempt(protocol, "game", data):
            self.knocked(key, protocol, knock(view, "datagram"), source)
        else:
            self.drops.add(protocol, "empty" if not data else "scan")
        return None

    def _answered(self, protocol: str, reply: bytes | None) -> bytes | None:
        if reply is not None:
            self.counts[("answer", protocol)] += 1
        return reply

    # --- TCP ------------------------------------------------------------------------------

    async def connection(self, key: str, binding: Binding, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        protocol = binding.protocol
        source = writer.get_extra_info("peername") or ("?", 0)
        if not self.admit(key, protocol, source):
            writer.close()
            return
        if self.tcp_open >= self.limits.tcp_total or \
                self.tcp_by_source[source[0]] >= self.limits.tcp_per_source:
            self.counts[("closed", protocol, "too many connections")] += 1
            writer.close()
            return
        self.tcp_open += 1
        self.tcp_by_source[source[0]] += 1
        try:
            async with asyncio.timeout(self.limits.tcp_seconds):
                if protocol == "minecraft":
                    await self._minecraft(key, reader, writer, source)
                else:
                    await self._generic_tcp(key, reader, source)
        except TimeoutError:
            self.counts[("closed", protocol, "time cap")] += 1
        except (ConnectionError, OSError):
            self.counts[("closed", protocol, "reset")] += 1
        except Exception as e:
            self._error(protocol, e)
        finally:
            self.tcp_open -= 1
            self.tcp_by_source[source[0]] -= 1
            if self.tcp_by_source[source[0]] <= 0:
                del self.tcp_by_source[source[0]]
            writer.close()

    async def _minecraft(self, key: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, source: Source) -> None:
        view = self.views.get(key)
        if view is None:
            return
        conversation = minecraft.Conversation(view)
        left = self.limits.tcp_bytes
        while left > 0:
            data = await reader.read(min(READ_CHUNK, left))
            if not data:
                return
            left -= len(data)
            try:
                step = conversation.receive(data)
            except Refused as e:
                self.drops.add("minecraft", e.reason)
                return
            if step.knock is not None:
                self.knocked(key, "minecraft", step.knock, source)
            if step.send:
                self.counts[("answer", "minecraft")] += 1
                writer.write(step.send)
                await writer.drain()
            if step.close:
                return
        self.counts[("closed", "minecraft", "byte cap")] += 1

    async def _generic_tcp(self, key: str, reader: asyncio.StreamReader, source: Source) -> None:
        data = b""
        while len(data) < protocols.MIN_JOIN:  # a first message may come in pieces
            chunk = await reader.read(GENERIC_TCP_PEEK - len(data))
            if not chunk:
                break
            data += chunk
        view = self.views.get(key)
        if view is not None and protocols.is_wake_attempt("generic-tcp", "game", data):
            self.knocked(key, "generic-tcp", knock(view, "tcp"), source)
        else:
            self.drops.add("generic-tcp", "empty" if not data else "scan")


# The gate's counts as Prometheus counters: (name, help, label names) by the first item of a key.
METRICS = {
    "answer": ("peon_gate_answers_total", "Answers the gate sent, by protocol", ("protocol",)),
    "drop": ("peon_gate_drops_total", "Packets dropped, by protocol and reason",
             ("protocol", "reason")),
    "knock": ("peon_gate_knocks_total", "Joins seen, by protocol and outcome",
              ("protocol", "outcome")),
    "knock handed on": ("peon_gate_knocks_handed_on_total",
                        "Knocks handed to the operator (after the debounce)", ("protocol",)),
    "closed": ("peon_gate_connections_closed_total", "TCP connections the gate cut, and why",
               ("protocol", "why")),
    "error": ("peon_gate_errors_total", "Handler failures (caught), by where", ("where",)),
}


class Collector:
    """Exposes a Gate's counts to prometheus_client when scraped (REGISTRY.register(...))."""

    def __init__(self, gate: Gate):
        self.gate = gate

    def collect(self):
        from prometheus_client.core import CounterMetricFamily
        families = {kind: CounterMetricFamily(name[:-len("_total")], text, labels=labels)
                    for kind, (name, text, labels) in METRICS.items()}
        for key, n in sorted(self.gate.stats().items()):
            family = families.get(key[0])
            if family is not None:
                family.add_metric(list(key[1:]), n)
        yield from families.values()


class _Udp:
    """One UDP port of a server: its socket read in the loop's readiness callback, each datagram
    answered in the same call. Not asyncio's datagram transport: that reads every datagram into
    a 256 KiB buffer (an mmap and munmap in the kernel a datagram: three quarters of the gate's
    time, bench/wake.py (c)) and queues answers a full send buffer refuses; here a read takes at
    most UDP_READ bytes, and an answer the socket cannot take now is dropped and counted (UDP)."""

    def __init__(self, gate: Gate, key: str, binding: Binding, sock: socket.socket):
        self.gate, self.key, self.binding, self.sock = gate, key, binding, sock

    def ready(self) -> None:
        gate, sock = self.gate, self.sock
        for _ in range(UDP_BATCH):
            try:
                data, source = sock.recvfrom(UDP_READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable from a spoofed source's address
                gate.counts[("error", "udp socket")] += 1
                continue
            try:
                reply = gate.datagram(self.key, self.binding, data, source)
                if reply is not None:
                    sock.sendto(reply, source)
            except (BlockingIOError, InterruptedError):
                gate.counts[("error", "udp send buffer full")] += 1
            except OSError:
                gate.counts[("error", "udp socket")] += 1
            except Exception as e:
                gate._error(self.binding.protocol, e)


class _Listener:
    """One bound socket of one server, and (TCP) the connections it is serving."""

    def __init__(self, binding: Binding):
        self.binding = binding
        self.udp: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.sockname: tuple[str, int] = (binding.address, binding.port)

    @classmethod
    async def open(cls, gate: Gate, key: str, binding: Binding) -> _Listener:
        listener = cls(binding)
        loop = asyncio.get_running_loop()
        if binding.transport == "udp":
            family, _, proto, _, address = (await loop.getaddrinfo(
                binding.address, binding.port, type=socket.SOCK_DGRAM))[0]
            sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            try:
                sock.setblocking(False)
                sock.bind(address)
                loop.add_reader(sock.fileno(), _Udp(gate, key, binding, sock).ready)
            except BaseException:
                sock.close()
                raise
            listener.udp = sock
            listener.sockname = sock.getsockname()[:2]
        else:
            async def handle(reader, writer):
                task = asyncio.current_task()
                listener.tasks.add(task)
                try:
                    await gate.connection(key, binding, reader, writer)
                except asyncio.CancelledError:
                    pass  # the listener closed (its server removed): asyncio would log it
                finally:
                    listener.tasks.discard(task)
            listener.server = await asyncio.start_server(
                handle, binding.address, binding.port, limit=READ_CHUNK)
            listener.sockname = listener.server.sockets[0].getsockname()[:2]
        return listener

    async def close(self) -> None:
        if self.udp is not None:
            asyncio.get_running_loop().remove_reader(self.udp.fileno())
            self.udp.close()
            self.udp = None
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):  # Python 3.11's Server.close leaves connections open
                task.cancel()
            await self.server.wait_closed()


# --- a minimal command line: serve the sleeping servers a JSON file names, log the knocks -------

SERVERS_FILE_MAX = 4 * 1024 * 1024
_VIEW_FIELDS = {"name", "map", "folder", "game", "app_id", "version", "protocol", "max_players",
                "port", "wake_on_connect", "window_open", "wake_players", "start_seconds", "info"}


def parse_servers(text: str) -> dict[str, tuple[SleepingServer, list[Binding]]]:
    """{"ns/name": {"view": {SleepingServer's fields}, "bindings": [{address, port, transport,
    role, protocol}]}} -> the typed views; ValueError naming the server and field otherwise."""
    import json
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the servers file must hold an object: key -> {view, bindings}")
    out = {}
    for key, entry in data.items():
        try:
            view = dict(entry["view"])
            unknown = set(view) - _VIEW_FIELDS
            if unknown:
                raise ValueError(f"unknown view field(s) {sorted(unknown)}")
            if view.get("wake_players") is not None:
                view["wake_players"] = frozenset(map(str, view["wake_players"]))
            view["info"] = tuple((str(k), str(v)) for k, v in view.get("info", ()))
            bindings = [Binding(**b) for b in entry["bindings"]]
            out[str(key)] = (SleepingServer(**view), bindings)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"server {key!r}: {type(e).__name__}: {e}") from None
    return out


async def serve(path: str, metrics_port: int = 0) -> None:
    with open(path, "rb") as f:
        raw = f.read(SERVERS_FILE_MAX + 1)
    if len(raw) > SERVERS_FILE_MAX:
        raise ValueError(f"{path} is larger than {SERVERS_FILE_MAX} bytes")
    gate = Gate()
    if metrics_port:
        from prometheus_client import REGISTRY, start_http_server
        REGISTRY.register(Collector(gate))
        start_http_server(metrics_port)
    for key, (view, bindings) in parse_servers(raw.decode()).items():
        await gate.set_server(key, view, bindings)
        log.info("gate: %s on %s", key, sorted(gate.bound(key).values()))
    try:
        await asyncio.Event().wait()
    finally:
        await gate.close()
