"""`peon-api` in a subprocess, and a client that calls it as PEON's Discord bot does."""
from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from kube_helpers import wait_for

BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeonApi:
    """`peon-api` in a subprocess, and a client that calls it as the Discord bot does."""

    def __init__(self, kubeconfig: str, namespace: str, clock_file: pathlib.Path | None,
                 log: pathlib.Path, key: str | None = None, args: list[str] = ()):
        self.key = key or secrets.token_urlsafe(24)
        self.port = free_port()
        env = dict(os.environ, KUBECONFIG=kubeconfig, PEON_API_KEY=self.key)
        if clock_file:
            env["PEON_CLOCK_FILE"] = str(clock_file)
        self.log_path = log
        self.proc = subprocess.Popen([str(BIN / "peon-api"), "--namespace", namespace, "--host",
                                      "127.0.0.1", "--port", str(self.port), *args],
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
        wait_for("peon-api to answer", lambda: self._up(), 30)

    def _up(self) -> bool:
        try:
            return self.call("GET", "/api/v1/orchestrator")[0] == 200
        except OSError:
            return False

    def call(self, method: str, path: str, body=None, key: str | None = None):
        data = (body if isinstance(body, bytes) else json.dumps(body).encode()) if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"X-Api-Key": self.key if key is None else key,
                                              "Content-Type": "application/json"})
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # the bot's timeout
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        self.slowest = max(getattr(self, "slowest", 0.0), time.monotonic() - t0)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(15)
        return self.log_path.read_text(errors="replace")


