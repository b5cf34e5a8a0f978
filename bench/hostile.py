#!/usr/bin/env python3
"""The operator's memory against hostile answers (issue 23, item 2):

    webhook   the real Notifier.deliver (its defaults; back-off sleeps skipped) posting to a
              loopback webhook that answers 500 with a 300 MB body
    status    the real players.query (the prober's call) against a loopback Minecraft server
              whose status answer declares a 200 MB packet and then streams bytes

Each runs in a subprocess of its own, which prints its peak RSS (getrusage ru_maxrss) before
and after, what the call returned and the Warnings it posted; the servers run here, generating
their bytes as they send them, so their memory is not counted.

    bench/hostile.py [--ref GIT_REF] [--webhook-mb 300] [--status-mb 200]

--ref runs the operator code of that commit (git archive into a temporary folder) instead of
the working tree's, for a before/after comparison. Traffic: loopback only.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
MB = 10 ** 6
CHUNK = b"x" * 65536


def varint(n: int) -> bytes:
    # Not players.varint: the bench also measures commits (--ref) whose players.py has none.
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def serve(answer) -> int:
    """A loopback TCP server answering each connection with `answer(conn)`; returns its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def one(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)  # the request (small: a POST of JSON, or a handshake)
                answer(conn)
            except OSError:
                pass  # the client hung up

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1]


def stream(conn: socket.socket, size: int) -> None:
    sent = 0
    while sent < size:
        conn.sendall(CHUNK[:size - sent])
        sent += min(len(CHUNK), size - sent)


def webhook_server(size: int) -> int:
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        stream(conn, size)
    return serve(answer)


def status_server(size: int) -> int:
    def answer(conn: socket.socket) -> None:
        conn.sendall(varint(size) + b"\x00" + varint(size - 4))
        stream(conn, size)
    return serve(answer)


CHILD = r"""
import asyncio, json, resource, sys
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
which, port = sys.argv[1], int(sys.argv[2])
from peon import controller, notify as nt, players  # the operator's imports: its baseline
report = {"code": nt.__file__, "peak_before_mib": round(peak(), 1)}
if which == "webhook":
    # The bench's webhook is on loopback: allowed, as --notify-allow-cidr would.
    allowed = {"allowed": nt.allowed_networks(["127.0.0.0/8"])} \
        if hasattr(nt, "allowed_networks") else {}
    warnings = []
    async def no_sleep(_):
        pass
    async def go():
        n = nt.Notifier(lambda ns, s: f"http://127.0.0.1:{port}/api/webhooks/1/secret-token",
                        lambda obj, msg: warnings.append(msg), sleep=no_sleep, **allowed)
        out = nt.Outgoing("games", "vikings", "hook", {"content": "vikings is up"},
                          involved={"metadata": {"name": "vikings"}})
        return await n.deliver(out)
    try:
        report["returned"] = asyncio.run(go())
    except BaseException as e:
        report["escaped"] = type(e).__name__
    report["warnings"] = warnings
else:
    try:
        report["returned"] = repr(asyncio.run(players.query("minecraft", "127.0.0.1", port)))
    except BaseException as e:
        report["escaped"] = type(e).__name__
report["peak_mib"] = round(peak(), 1)
print(json.dumps(report))
"""


def operator_code(ref: str | None, tmp: pathlib.Path) -> pathlib.Path:
    if not ref:
        return ROOT / "operator"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "operator/peon"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp / "operator"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=None, help="the operator of this commit (default: the tree)")
    ap.add_argument("--webhook-mb", type=int, default=300)
    ap.add_argument("--status-mb", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        code = operator_code(args.ref, pathlib.Path(tmp))
        for which, port in (("webhook", webhook_server(args.webhook_mb * MB)),
                            ("status", status_server(args.status_mb * MB))):
            done = subprocess.run([sys.executable, "-c", CHILD, which, str(port)],
                                  capture_output=True, text=True, timeout=600,
                                  env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"})
            line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
            report = json.loads(line)
            report["stderr_mentions_token"] = "secret-token" in done.stderr
            report["stderr_tail"] = done.stderr.strip().splitlines()[-3:]
            print(which, json.dumps(report, indent=None))


if __name__ == "__main__":
    main()
