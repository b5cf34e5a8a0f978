"""Which pods are a server's own, for everyone who reads them: the operator's cache, the API's
log route and page, `kubectl peon logs` and the console."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from peon import LABEL_GAMESERVER
from peon.shared.backup import LABEL_BACKUP, LABEL_DOWNLOAD, LABEL_RESTORE


def server_of(pod: Mapping[str, Any]) -> str | None:
    """The GameServer this is the own pod of: labelled with it, and not a backup, restore or
    download pod, nor any Job's (those carry the server's label too); None otherwise."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = labels.get(LABEL_GAMESERVER)
    if not name or any(k in labels for k in (LABEL_BACKUP, LABEL_RESTORE, LABEL_DOWNLOAD)):
        return None
    if any(o.get("kind") == "Job" for o in meta.get("ownerReferences") or ()):
        return None
    return name


def log_pod(pods: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The server's pod to read a log from or talk to: one not going away first, then a running
    one, then the newest."""
    mine = [p for p in pods if server_of(p) == name]
    return max(mine, default=None, key=lambda p: (
        not p["metadata"].get("deletionTimestamp"),
        (p.get("status") or {}).get("phase") == "Running",
        p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
