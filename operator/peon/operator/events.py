"""What a watch event of each kind does: the object goes into the cache, and news queues the keys
it concerns. One plain function per kind of event, the same for kopf's watches and the
operator's own streams (kinds.py says which watches which): `(controller, kind, type_, obj)`,
where type_ is ADDED, MODIFIED, DELETED (or kopf's None for an object it listed).

`controller` is the Controller (its cache and queue); it is not imported here, so the
reconcilers' modules stay the only ones the Controller imports."""
from __future__ import annotations

from typing import Any

from peon import LABEL_GAMESERVER
from peon.shared.backup import FINISHED, LABEL_BACKUP, LABEL_RESTORE

from .games import is_judged


def _key(obj: dict) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def gameserver_event(controller: Any, kind: str, type_: str | None, obj: dict) -> None:
    if not controller.cache.put(controller.cache.gameservers, _key(obj), obj, type_ == "DELETED"):
        return  # the echo of the operator's own write (its status), or nothing newer
    controller.queue.add(("GameServer", *_key(obj)))
    game = controller.cache.game((obj.get("spec") or {}).get("gameUid", ""))
    if game is not None and not is_judged(game):  # a namespaced operator judges the Games it uses
        controller.queue.add(("Game", "", game["metadata"]["name"]))


def game_event(controller: Any, kind: str, type_: str | None, obj: dict) -> None:
    name = obj["metadata"]["name"]
    if not controller.cache.put(controller.cache.games, name, obj, type_ == "DELETED"):
        return
    if type_ != "DELETED":
        controller.queue.add(("Game", "", name))
    for key in controller.cache.gameservers_of_game(obj):
        controller.queue.add(key)


def run_event(controller: Any, kind: str, type_: str | None, obj: dict) -> None:
    """A GameServerBackup's or GameServerRestore's. Every event, the echoes of the operator's
    own writes too: a run's status written by its reconciler is what wakes its server (update
    and restore holds)."""
    store = controller.cache.backups if kind == "GameServerBackup" else controller.cache.restores
    namespace, name = _key(obj)
    controller.cache.put(store, (namespace, name), obj, type_ == "DELETED")
    controller.queue.add((kind, namespace, name))
    gs = (obj.get("spec") or {}).get("gameServer")
    if gs:  # the server's status, update hold and restore hold follow its runs
        controller.queue.add(("GameServer", namespace, gs))
        if kind == "GameServerBackup":  # a restore may wait for this backup to finish
            for key in restores_waiting_for(controller, namespace, gs):
                controller.queue.add(key)


def job_event(controller: Any, kind: str, type_: str | None, obj: dict) -> None:
    namespace, name = _key(obj)
    controller.cache.put(controller.cache.jobs, (namespace, name), obj, type_ == "DELETED")
    labels = obj["metadata"].get("labels") or {}
    for label, run_kind in ((LABEL_BACKUP, "GameServerBackup"), (LABEL_RESTORE, "GameServerRestore")):
        if label in labels:
            controller.queue.add((run_kind, namespace, labels[label]))


def child_event(controller: Any, kind: str, type_: str | None, obj: dict) -> None:
    namespace, name = _key(obj)
    owner = (obj["metadata"].get("labels") or {}).get(LABEL_GAMESERVER)
    news = controller.cache.put(controller.cache.children, (kind, namespace, name), obj,
                                type_ == "DELETED")
    if owner and news:
        controller.queue.add_soon(("GameServer", namespace, owner))


def pod_event(controller: Any, kind: str, type_: str | None, obj: dict) -> None:
    namespace, name = _key(obj)
    labels = obj["metadata"].get("labels") or {}
    if LABEL_GAMESERVER not in labels or not controller.cache.put(
            controller.cache.pods, (namespace, name), obj, type_ == "DELETED"):
        return
    controller.queue.add_soon(("GameServer", namespace, labels[LABEL_GAMESERVER]))
    for label, run_kind in ((LABEL_RESTORE, "GameServerRestore"), (LABEL_BACKUP, "GameServerBackup")):
        if label in labels:  # a run waits for the server's pods to go
            controller.queue.add((run_kind, namespace, labels[label]))
    for key in restores_waiting_for(controller, namespace, labels[LABEL_GAMESERVER]):
        controller.queue.add(key)


def restores_waiting_for(controller: Any, ns: str, gs: str) -> list[tuple[str, str, str]]:
    return [("GameServerRestore", ns, r["metadata"]["name"])
            for r in controller.cache.runs_of(controller.cache.restores, ns, gs)
            if (r.get("status") or {}).get("phase") not in FINISHED]
