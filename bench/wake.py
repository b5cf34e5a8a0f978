#!/usr/bin/env python3
"""The gate's figures (issue 25, "How we check", bench/wake.py), loopback only:

    (b) memory  the gate's RSS with 100 and 1,000 sleeping servers, each with its UDP listener
                (A2S query port) on 127.0.0.1, every one asked once (challenge + INFO) so its
                answer is built. Each count runs in a subprocess of its own; it reports its RSS
                (VmRSS) with an empty Gate on a running loop (the base: interpreter, imports,
                loop) and after the servers, and the difference per server.
                Targets: base <= 50 MiB, <= 1 MiB per sleeping server above it.
    (c) A2S     A2S_INFO answers a second for 1,000 sleeping servers, end to end over loopback:
                the gate in a subprocess (one core), this process the client, asking the servers
                round robin as python-a2s does (INFO, the challenge back, INFO with it: two
                datagrams a query), `--window` queries in flight. Printed: queries answered a
                second (the target: >= 5,000/s) and its ratio to the target, datagrams answered
                a second, and the floor of the same client against a bare asyncio UDP echo
                server (one port, a datagram echoed per datagram) in the same run.
                The gate runs with its default global limit (20,000 datagrams/s: 10,000 such
                queries; --global-rate changes it) and the per-source limit lifted: the one
                client here stands for many players. Drops "rate limited" are that limit.
    (a) knock   (--knock; the bed's real node, under its lock) from a player's join on the
                gate to the game itself answering A2S at the same address, against the same
                server started with `state: Running` (apply to answering) in the same run: the
                real-node wake test (tests/integration/test_wake.py, its first test) sets up the
                gate pod and the operator and prints both times; this prints them and their
                ratio (target within 1.1x).

    bench/wake.py [--servers 100,1000] [--rate-servers 1000] [--seconds 5] [--window 32]
                  [--global-rate 20000]
    bench/wake.py --knock

Bounded: every run stops after --seconds (at most 60) or 2,000,000 datagrams, and every
subprocess is killed after 120 s. No wall-clock asserts: it prints figures.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import pathlib
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

LOCAL = "127.0.0.1"
HEADER = b"\xff\xff\xff\xff"
INFO = HEADER + b"TSource Engine Query\x00"
MIB = 1024 * 1024
TARGET_RATE = 5000
MAX_DATAGRAMS = 2_000_000
CHILD_SECONDS = 120
LOSS_SECONDS = 0.2  # a query unanswered this long is lost


def rss() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def views(n: int):
    from peon.gate.view import SleepingServer
    return [SleepingServer(name=f"Sleeping server {i}", map="Meadows", folder="valheim",
                           game="Valheim", app_id=892970, version="0.218.21", max_players=10,
                           port=2456 + i) for i in range(n)]


async def gate_with(n: int, limits):
    from peon.gate.server import Binding, Gate
    gate = Gate(lambda *_: None, limits)
    query = Binding(LOCAL, 0, "udp", "query", "a2s")
    for i, view in enumerate(views(n)):
        await gate.set_server(f"bench/s{i}", view, [query])
    ports = [gate.bound(f"bench/s{i}")[query][1] for i in range(n)]
    return gate, ports


async def ask_each_once(ports: list[int]) -> int:
    """Challenge + INFO to every port, from this process: every answer is built once."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((LOCAL, 0))
    answered = 0
    try:
        for port in ports:
            challenge = b""
            for _ in range(2):
                await loop.sock_sendto(sock, INFO + challenge, (LOCAL, port))
                reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), 2)
                if reply[4:5] == b"A":
                    challenge = reply[5:9]
                else:
                    answered += reply[4:5] == b"I"
                    break
    finally:
        sock.close()
    return answered


# --- children (each its own process, so the figures are the gate's own) ----------------------

async def child_memory(n: int) -> None:
    from peon.gate.server import Gate, Limits
    empty = Gate(lambda *_: None, Limits())
    await asyncio.sleep(0.1)
    base = rss()
    gate, ports = await gate_with(n, Limits(source_rate=1e6, source_burst=1e6))
    answered = await ask_each_once(ports)
    after = rss()
    await gate.close()
    await empty.close()
    print(json.dumps({"servers": n, "base": base, "after": after, "answered": answered}))


async def child_serve(n: int, global_rate: float) -> None:
    from peon.gate.server import Limits
    gate, ports = await gate_with(n, Limits(source_rate=1e6, source_burst=1e6,
                                            global_rate=global_rate,
                                            global_burst=max(1.0, global_rate / 10)))
    print(json.dumps({"ports": ports}), flush=True)
    await until_stdin_closes()
    stats = gate.stats()
    await gate.close()
    print(json.dumps({" ".join(k): v for k, v in stats.items()}), flush=True)


async def child_echo() -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Echo, local_addr=(LOCAL, 0))
    print(json.dumps({"ports": [transport.get_extra_info("sockname")[1]]}), flush=True)
    await until_stdin_closes()
    transport.close()
    print("{}", flush=True)


async def until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), CHILD_SECONDS)
    except TimeoutError:
        pass


# --- the client -------------------------------------------------------------------------------

def drive(ports: list[int], seconds: float, window: int, a2s: bool) -> dict:
    """Queries round robin with `window` in flight until `seconds` pass; a2s: INFO, challenge,
    INFO with it (as python-a2s asks); else one datagram echoed. A query unanswered after
    LOSS_SECONDS is lost (counted, its place in the window given to a new one; an answer after
    that is not counted): a datagram the gate drops (its global limit) must not shrink the
    window for the rest of the run."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((LOCAL, 0))
    sock.settimeout(LOSS_SECONDS / 4)
    request = INFO if a2s else INFO  # the echo server sends back the same 25 bytes
    sent = replies = answers = lost = 0
    next_port = 0
    in_flight = 0
    waiting: dict[int, collections.deque] = {}  # port -> when its queries in flight were sent
    start = now = next_check = time.perf_counter()
    deadline = start + seconds
    while now < deadline and sent < MAX_DATAGRAMS:
        while in_flight < window:
            port = ports[next_port]
            sock.sendto(request, (LOCAL, port))
            waiting.setdefault(port, collections.deque()).append(now)
            next_port = (next_port + 1) % len(ports)
            sent += 1
            in_flight += 1
        if now >= next_check:
            for port, sent_at in list(waiting.items()):
                while sent_at and sent_at[0] < now - LOSS_SECONDS:
                    sent_at.popleft()
                    lost += 1
                    in_flight -= 1
                if not sent_at:
                    del waiting[port]
            next_check = now + LOSS_SECONDS / 4
        try:
            reply, (_, port) = sock.recvfrom(2048)
        except TimeoutError:
            now = time.perf_counter()
            continue
        now = time.perf_counter()
        replies += 1
        if a2s and reply[4:5] == b"A":  # the challenge: ask again with it, same query in flight
            sock.sendto(INFO + reply[5:9], (LOCAL, port))
            sent += 1
            continue
        sent_at = waiting.get(port)
        if not sent_at:
            continue  # the answer to a query already counted lost
        sent_at.popleft()
        if not sent_at:
            del waiting[port]
        answers += 1
        in_flight -= 1
    took = time.perf_counter() - start
    sock.close()
    return {"seconds": took, "sent": sent, "replies": replies, "answers": answers, "lost": lost}


def spawn(*args: str) -> tuple[subprocess.Popen, list[int]]:
    child = subprocess.Popen([sys.executable, __file__, "--child", *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = child.stdout.readline()
    if not line:
        child.kill()
        raise RuntimeError(f"child {args} said nothing")
    return child, json.loads(line)["ports"]


def finish(child: subprocess.Popen) -> dict:
    out, _ = child.communicate(timeout=CHILD_SECONDS)
    return json.loads(out.strip().splitlines()[-1] if out.strip() else "{}")


def memory(counts: list[int]) -> None:
    print("(b) gate memory, each count in its own process (VmRSS):")
    for n in counts:
        out = subprocess.run([sys.executable, __file__, "--child", "memory", str(n)],
                             capture_output=True, text=True, cwd=ROOT, timeout=CHILD_SECONDS)
        if out.returncode:
            print(f"    {n} servers: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        got = json.loads(out.stdout.strip().splitlines()[-1])
        per = (got["after"] - got["base"]) / n
        print(f"    {n:>5} servers: base {got['base'] / MIB:6.1f} MiB (target <= 50), "
              f"with them {got['after'] / MIB:6.1f} MiB, {per / 1024:6.1f} KiB per server "
              f"(target <= 1024 KiB), {got['answered']}/{n} answered INFO")


def rate(n: int, seconds: float, window: int, global_rate: float) -> None:
    print(f"(c) A2S_INFO for {n} sleeping servers, {seconds:g} s, {window} in flight, the gate's "
          f"global limit {global_rate:g} datagrams/s (burst a tenth of it):")
    gate, ports = spawn("serve", str(n), str(global_rate))
    try:
        gated = drive(ports, seconds, window, a2s=True)
    finally:
        stats = finish(gate)
    echo, echo_ports = spawn("echo")
    try:
        floor = drive(echo_ports, seconds, window, a2s=False)
    finally:
        finish(echo)
    per_s = gated["answers"] / gated["seconds"]
    datagrams_per_s = gated["replies"] / gated["seconds"]
    floor_per_s = floor["replies"] / floor["seconds"]
    drops = {k: v for k, v in stats.items() if k.startswith("drop")}
    print(f"    gate: {per_s:8.0f} INFO queries answered/s (ratio to the 5,000/s target "
          f"{per_s / TARGET_RATE:.2f}), {datagrams_per_s:8.0f} datagrams answered/s, "
          f"{gated['lost']} lost, gate drops {drops or 'none'}")
    print(f"    floor: a bare asyncio UDP echo server, same client: {floor_per_s:8.0f} "
          f"datagrams/s (the gate's datagram rate is {datagrams_per_s / floor_per_s:.2f} of it)")


KNOCK_TEST = "tests/integration/test_wake.py::" \
    "test_asleep_the_address_answers_from_the_gate_and_a_join_wakes_the_game_there"


def knock() -> None:
    """(a): the wake test's own two times, from one run of it on the bed."""
    import re
    root = pathlib.Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "pytest", KNOCK_TEST, "-s", "-q",
                          "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True,
                         timeout=1200)
    found = {k: float(v) for k, v in re.findall(
        r"^(state Running, apply|knock) to the game answering: ([0-9.]+)s$", run.stdout, re.M)}
    if run.returncode != 0 or len(found) != 2:
        raise SystemExit(f"the wake test did not pass (exit {run.returncode}):\n"
                         f"{run.stdout[-3000:]}{run.stderr[-1000:]}")
    plain, woken = found["state Running, apply"], found["knock"]
    print(f"(a) knock to game answering: {woken:.1f} s; the same server from `state: Running` "
          f"to answering: {plain:.1f} s; ratio {woken / plain:.2f} (target at most 1.1)")


def main() -> None:
    if sys.argv[1:] == ["--knock"]:
        knock()
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        run = {"memory": lambda: child_memory(int(rest[0])),
               "serve": lambda: child_serve(int(rest[0]), float(rest[1])),
               "echo": child_echo}[kind]
        asyncio.run(run())
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="100,1000", help="counts for the memory figure")
    ap.add_argument("--rate-servers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--global-rate", type=float, default=20000.0,
                    help="the gate's global limit (datagrams/s; Limits' default 20,000)")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 0.5), 60.0)
    print("(a) knock to game answering: bench/wake.py --knock (the bed's real node)")
    memory([int(n) for n in args.servers.split(",")])
    rate(args.rate_servers, seconds, max(1, min(args.window, 1024)), max(1.0, args.global_rate))


if __name__ == "__main__":
    main()
