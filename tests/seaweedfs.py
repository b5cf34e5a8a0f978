"""A real S3 server for the off-site backup tests: SeaweedFS's `weed server`, built from its Go
module (tools/testbed/build-gotool seaweedfs), started on one address of this machine (loopback,
or the bed's bridge for pods on the real node) with every port pinned, telemetry off, and one
identity. No mock: restic talks S3 to it as to any store."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
ACCESS_KEY, SECRET_KEY = "peon-test-access", "peon-test-secret-0123456789"


def build(tool: str) -> str | None:
    """The tool's binary (built once per machine), or None with the reason printed."""
    res = subprocess.run([str(ROOT / "tools" / "testbed" / "build-gotool"), tool],
                         capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stderr[-2000:])
        return None
    return res.stdout.strip().splitlines()[-1]


def free_port_block(ip: str, count: int = 5) -> int:
    """A base port such that base .. base+count-1 and each +10000 (SeaweedFS's gRPC ports)
    are free on `ip` now."""
    for base in range(21000, 30000, 17):
        ports = [base + i for i in range(count)] + [base + i + 10000 for i in range(count)]
        if all(_free(ip, p) for p in ports):
            return base
    raise RuntimeError(f"no free port block on {ip}")


def _free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


class SeaweedFS:
    def __init__(self, weed: str, data: pathlib.Path, ip: str = "127.0.0.1"):
        self.ip, self.data = ip, data
        base = free_port_block(ip)
        self.master, self.volume, self.filer, self.s3 = base, base + 1, base + 2, base + 3
        data.mkdir(parents=True, exist_ok=True)
        config = data / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "peon", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        self.weed, self.config = weed, config
        self.start()

    def start(self) -> None:
        """The server on its data and ports (again after stop(): the same store, the same
        endpoint)."""
        weed, data, ip, config = self.weed, self.data, self.ip, self.config
        self.log = open(data / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [weed, "server", f"-ip={ip}", f"-ip.bind={ip}", f"-dir={data}", "-s3",
             f"-s3.config={config}", f"-master.port={self.master}", f"-volume.port={self.volume}",
             f"-filer.port={self.filer}", f"-s3.port={self.s3}",
             f"-master.port.grpc={self.master + 10000}", f"-volume.port.grpc={self.volume + 10000}",
             f"-filer.port.grpc={self.filer + 10000}", f"-s3.port.grpc={self.s3 + 10000}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
             "-master.volumeSizeLimitMB=64", "-volume.max=0"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.s3}"

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.data / 'weed.log').read_text()[-2000:]}")
            try:
                # The S3 gateway answers (403 without credentials) once the filer is up too.
                urllib.request.urlopen(self.endpoint, timeout=2)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("SeaweedFS did not come up")

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object's path under bucket/prefix, through the filer's HTTP API."""
        out, todo = [], [f"/buckets/{bucket}/{prefix}".rstrip("/") + "/"]
        while todo:
            folder = todo.pop()
            req = urllib.request.Request(f"http://{self.ip}:{self.filer}{folder}?limit=100000",
                                         headers={"Accept": "application/json"})
            try:
                listing = json.loads(urllib.request.urlopen(req, timeout=10).read() or b"{}")
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    continue
                raise
            for entry in listing.get("Entries") or []:
                path = entry["FullPath"]
                if entry.get("Mode", 0) & 0o40000_000 or entry.get("Mode", 0) & 0x80000000:
                    todo.append(path + "/")
                else:
                    out.append(path)
        return sorted(out)

    def read(self, path: str) -> bytes:
        return urllib.request.urlopen(f"http://{self.ip}:{self.filer}{path}", timeout=30).read()

    def overwrite(self, path: str, data: bytes) -> None:
        """Replace an object's bytes behind the store client's back (a corrupted object)."""
        req = urllib.request.Request(f"http://{self.ip}:{self.filer}{path}", data=data, method="PUT")
        urllib.request.urlopen(req, timeout=30).read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        self.log.close()
