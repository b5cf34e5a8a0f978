"""Fake game servers that speak the real query protocols on loopback, for tests:
Steam A2S_INFO over UDP and the Minecraft server-list ping over TCP. Set `players` to change
what they report."""
from __future__ import annotations

import json
import socket
import struct
import threading


class A2SServer:
    """Answers A2S_INFO (with the challenge handshake newer clients expect)."""

    CHALLENGE = b"\x0b\xad\xf0\x0d"

    def __init__(self, players: int = 0, max_players: int = 10):
        self.players, self.max_players = players, max_players
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(1400)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data.startswith(b"\xff\xff\xff\xffTSource Engine Query\x00"):
                continue
            if not data.endswith(self.CHALLENGE):
                self.sock.sendto(b"\xff\xff\xff\xffA" + self.CHALLENGE, addr)
                continue
            self.queries += 1
            s = lambda t: t.encode() + b"\x00"  # noqa: E731
            body = (b"\xff\xff\xff\xffI" + bytes([17]) + s("Peon test server") + s("map")
                    + s("valheim") + s("Valheim") + struct.pack("<h", 0)
                    + bytes([self.players, self.max_players, 0]) + b"dl" + bytes([0, 0])
                    + s("1.0.0") + bytes([0]))
            self.sock.sendto(body, addr)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _read_varint(conn: socket.socket) -> int:
    n = shift = 0
    while True:
        b = conn.recv(1)
        if not b:
            raise ConnectionError("closed")
        n |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            return n


class MinecraftServer:
    """Answers the server-list ping: handshake, status request (JSON), ping/pong."""

    def __init__(self, players: int = 0, max_players: int = 20):
        self.players, self.max_players = players, max_players
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _packet(self, conn: socket.socket) -> bytes:
        length = _read_varint(conn)
        data = b""
        while len(data) < length:
            chunk = conn.recv(length - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _send(self, conn: socket.socket, payload: bytes) -> None:
        conn.sendall(_varint(len(payload)) + payload)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._packet(conn)  # handshake
                while True:
                    pkt = self._packet(conn)
                    if pkt[:1] == b"\x00":  # status request
                        status = json.dumps({
                            "version": {"name": "1.21", "protocol": 767},
                            "players": {"online": self.players, "max": self.max_players},
                            "description": {"text": "Peon test server"}}).encode()
                        self._send(conn, b"\x00" + _varint(len(status)) + status)
                    elif pkt[:1] == b"\x01":  # ping: echo the payload
                        self._send(conn, pkt)
                        return
            except (ConnectionError, OSError):
                return

    def close(self) -> None:
        self.sock.close()
