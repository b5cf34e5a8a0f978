"""A registry on loopback for the real node (issue 28's updates): the bed has no registry, and
an image whose pod asks `imagePullPolicy: Always` must be pulled from one. This serves the
Docker Registry HTTP API v2 (read only) for one repository from an OCI archive exported from the
node's containerd, on 127.0.0.1, where containerd pulls over plain HTTP (its CRI does for
localhost). Every request is recorded, so a test sees a pull happen."""
from __future__ import annotations

import hashlib
import http.server
import json
import tarfile
import threading
import time


class Registry:
    def __init__(self, archive: str, repository: str, tag: str):
        self.repository, self.tag = repository, tag
        self.blobs: dict[str, bytes] = {}
        with tarfile.open(archive) as t:
            index = json.load(t.extractfile("index.json"))
            for m in t.getmembers():
                if m.isfile() and m.name.startswith("blobs/sha256/"):
                    data = t.extractfile(m).read()
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    assert m.name.endswith(digest.split(":")[1]), m.name
                    self.blobs[digest] = data
        top = index["manifests"][0]
        self.top, self.top_type = top["digest"], top["mediaType"]
        self.requests: list[tuple[float, str, str]] = []  # (time.time(), method, path)
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                registry.requests.append((time.time(), self.command, self.path))
                found = registry.lookup(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, kind, digest = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def image(self) -> str:
        return f"127.0.0.1:{self.port}/{self.repository}:{self.tag}"

    def lookup(self, path: str) -> tuple[bytes, str, str | None] | None:
        path = path.split("?", 1)[0]
        if path in ("/v2/", "/v2"):
            return b"{}", "application/json", None
        prefix = f"/v2/{self.repository}/"
        if not path.startswith(prefix):
            return None
        kind, _, ref = path[len(prefix):].partition("/")
        if kind == "manifests":
            digest = self.top if ref == self.tag else ref
            data = self.blobs.get(digest)
            if data is None:
                return None
            media = json.loads(data).get("mediaType") or self.top_type
            return data, media, digest
        if kind == "blobs" and ref in self.blobs:
            return self.blobs[ref], "application/octet-stream", ref
        return None

    def manifest_requests(self, since: float = 0.0) -> list[tuple[float, str, str]]:
        return [r for r in self.requests if r[0] >= since and "/manifests/" in r[2]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
