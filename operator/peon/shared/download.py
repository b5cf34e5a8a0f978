"""`peon backup download`: one finished backup out of the cluster into a local file.

A short-lived pod (backup.download_pod) holds the backup: the backup volume for an archive,
the store's Secret for an off-site snapshot (exported there as a Peon archive). The archive's
bytes come out through exec, are checked against the checksum the backup recorded (or the
export computed), and land beside a `.sha256` file, so `peon archive restore FILE DIR`
verifies and restores them anywhere, Kubernetes or not. The pod is deleted in every case.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from . import backup as bk
from .kube import Kube
from .model import parse_scheduling

POD_START_SECONDS = 300
GI = 1 << 30
DEFAULT_WORLD = "20Gi"  # a server's volume when its spec says no size (backup.py's default)


class DownloadError(Exception):
    """Why a backup cannot be downloaded; the message is for the user."""


@dataclass(frozen=True)
class Downloaded:
    path: str
    size: int
    sha256: str


class _HashingFile:
    """Writes through to a file while hashing and counting what passes."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        if data:
            self.f.write(data)
            self.sha.update(data)
            self.size += len(data)


def downloadable(run: dict | None, name: str) -> dict:
    """The backup, if it is one that can be downloaded; else why not."""
    if run is None:
        raise DownloadError(f"there is no GameServerBackup {name!r} here")
    status = run.get("status") or {}
    if status.get("phase") != bk.SUCCEEDED:
        raise DownloadError(f"backup {name} is {status.get('phase') or 'not started'}: only a "
                            "Succeeded backup has an archive")
    if not (status.get("snapshot") and status.get("store")) and not (
            status.get("volume") and status.get("archive")):
        raise DownloadError(f"backup {name} records neither an archive nor a snapshot")
    return run


def expected_sha256(run: dict, stderr: str) -> str:
    """The checksum to hold the download to: the one the backup recorded for its archive, or
    the one `peon store export` printed for the archive it made from the snapshot."""
    status = run.get("status") or {}
    if not status.get("snapshot"):
        if not status.get("sha256"):
            raise DownloadError("the backup recorded no checksum for its archive")
        return status["sha256"]
    for line in reversed(stderr.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("sha256"):
            return doc["sha256"]
    raise DownloadError(f"exporting the snapshot failed: {stderr.strip()[-500:] or 'no output'}")


def download(kube: Kube, namespace: str, name: str, out: str, image: str | None,
             timeout: float = bk.DOWNLOAD_SECONDS, log=lambda msg: None) -> Downloaded:
    run = downloadable(kube.get("GameServerBackup", namespace, name), name)
    image = image or (run.get("status") or {}).get("image")
    if not image:
        raise DownloadError("the backup does not say which image its Jobs ran; give --image "
                            "(the operator's image, as in its --job-image)")
    # Always `-download-` and six hex digits at its end (the chart's admission policy lets
    # the PEON API exec only into pods so named, which no Deployment's or Job's pod is).
    pod_name = f"{bk.fit(name, 63 - 16)}-download-{secrets.token_hex(3)}"
    gs = kube.get("GameServer", namespace, run["spec"]["gameServer"]) or {}
    pod = with_scratch_limit(bk.download_pod(run, image, pod_name, _scheduling(kube, gs)),
                             scratch_bytes(run, gs))
    kube.create(pod)
    log(f"pod {pod_name} started")
    try:
        _wait_running(kube, namespace, pod_name)
        folder = os.path.dirname(os.path.abspath(out)) or "."
        fd, partial = tempfile.mkstemp(prefix=".partial-", suffix=".tar.gz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                sink = _HashingFile(f)
                result = kube.exec(namespace, pod_name, "download", bk.download_command(run),
                                   timeout, stdout=sink)
                f.flush()
                os.fsync(f.fileno())
            if not result.ok:
                raise DownloadError(f"the download failed ({result.error}): "
                                    f"{result.output.strip()[-500:]}")
            want = expected_sha256(run, result.output)
            got = sink.sha.hexdigest()
            if got != want:
                raise DownloadError(f"the download does not match the backup's checksum "
                                    f"(expected {want}, got {got}); nothing was kept")
            os.replace(partial, out)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        with open(out + ".sha256", "w") as f:
            f.write(f"{got}  {os.path.basename(out)}\n")
        return Downloaded(out, sink.size, got)
    finally:
        try:
            kube.delete("Pod", namespace, pod_name)
        except ApiException:
            pass


def scratch_bytes(run: dict, gs: dict) -> int:
    """The most a download pod's scratch space (an emptyDir) may hold: a snapshot restored
    there (at most the server's volume) and the archive made of it (the backup's recorded
    size, else the volume's again), and 1 GiB to spare. Beyond it the kubelet evicts the pod
    rather than let it fill the node's disk."""
    size = ((gs.get("spec") or {}).get("storage") or {}).get("size") or DEFAULT_WORLD
    try:
        world = int(parse_quantity(size))
    except (ValueError, ArithmeticError):
        world = int(parse_quantity(DEFAULT_WORLD))
    archive = (run.get("status") or {}).get("size")
    archive = archive if isinstance(archive, int) and archive > 0 else world
    return world + archive + GI


def with_scratch_limit(pod: dict, limit: int) -> dict:
    """`pod` with every emptyDir bounded to `limit` bytes."""
    for v in pod["spec"].get("volumes") or []:
        if "emptyDir" in v:
            v["emptyDir"] = {**(v["emptyDir"] or {}), "sizeLimit": str(limit)}
    return pod


def _scheduling(kube: Kube, gs: dict) -> dict[str, Any]:
    """Where the server may run (its Game's tolerations, say): the backup volume is there."""
    spec = gs.get("spec") or {}
    game = kube.get("Game", None, spec["gameUid"]) if spec.get("gameUid") else None
    default = parse_scheduling(((game or {}).get("spec") or {}).get("scheduling"))
    return parse_scheduling(spec.get("scheduling")).over(default).pod_fields()


def _wait_running(kube: Kube, namespace: str, pod_name: str) -> None:
    deadline = time.monotonic() + POD_START_SECONDS
    while time.monotonic() < deadline:
        pod = kube.get("Pod", namespace, pod_name) or {}
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running":
            return
        if phase in ("Failed", "Succeeded"):
            raise DownloadError(f"the download pod {pod_name} ended ({phase}) before the download")
        waiting = [c["state"]["waiting"] for c in (pod.get("status") or {}).get("containerStatuses") or []
                   if (c.get("state") or {}).get("waiting", {}).get("reason") in
                   ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "InvalidImageName")]
        if waiting:
            raise DownloadError(f"the download pod cannot start: {waiting[0]['reason']}: "
                                f"{waiting[0].get('message', '')}")
        time.sleep(0.5)
    raise DownloadError(f"the download pod {pod_name} did not start within {POD_START_SECONDS} s "
                        f"(kubectl -n {namespace} describe pod {pod_name})")
