"""The gate in a cluster: which servers sleep, read from the GameServers the operator marks,
and each knock written back as status.knock (issue 25).

The operator decides everything (operator/wake.py): which servers are at the gate, the gate
ports each of their ports gets, and what to answer (status.gate: serving, ports, view). The
gate follows: a list and a watch of GameServers, each server's listeners set or removed. Its
only write is the status subresource's `knock` ({at, address, how, player, outcome}), which the
operator checks against the server's own rules before it writes the wake-up annotation; the gate
cannot write a spec (RBAC: get/list/watch gameservers, patch gameservers/status).

Bounded: a server's view is taken field by field with types checked and text cut
(view.cut); at most MAX_PORTS ports a server; a status the gate cannot read is skipped and
counted, never a crash.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Any, Mapping

from peon.shared import clock
from .server import Binding, Gate
from .view import Knock, SleepingServer, cut

log = logging.getLogger(__name__)

MAX_PORTS = 16
BIND_RETRY_SECONDS = 5
WATCH_SECONDS = 300


def _int(v: Any, low: int = 0, high: int = 2 ** 31 - 1) -> int:
    return v if type(v) is int and low <= v <= high else 0


def view_from(gate: Mapping[str, Any], now: dt.datetime) -> SleepingServer:
    """status.gate.view as the typed view (unknown or ill-typed fields left at their default)."""
    v = gate.get("view") or {}
    if not isinstance(v, Mapping):
        raise ValueError("status.gate.view is not an object")
    text = {k: cut(v[k]) for k in ("name", "map", "folder", "game", "version")
            if isinstance(v.get(k), str)}
    players = v.get("wake_players")
    return SleepingServer(
        name=text.get("name", ""), map=text.get("map", ""), folder=text.get("folder", ""),
        game=text.get("game", ""), version=text.get("version", ""),
        app_id=_int(v.get("app_id")), max_players=_int(v.get("max_players"), 0, 255),
        port=_int(v.get("port"), 0, 65535),
        protocol=v["protocol"] if type(v.get("protocol")) is int and 0 <= v["protocol"] < 2 ** 31
        else None,
        wake_on_connect=v.get("wake_on_connect") is not False,
        window_open=v.get("window_open") is not False,
        opens_at=clock.parse(v["opens_at"]) if isinstance(v.get("opens_at"), str) else None,
        now=now,
        wake_players=frozenset(cut(str(p), 16) for p in players[:256])
        if isinstance(players, list) else None)


def bindings_from(gate: Mapping[str, Any], address: str = "0.0.0.0") -> list[Binding]:
    out = []
    for p in (gate.get("ports") or [])[:MAX_PORTS]:
        out.append(Binding(address, _int(p.get("gatePort"), 1, 65535),
                           str(p.get("protocol", "")).lower(), str(p.get("role", "")),
                           str(p.get("speaks", ""))))
    return out


def wanted(obj: Mapping[str, Any], now: dt.datetime, address: str = "0.0.0.0"
           ) -> tuple[SleepingServer, list[Binding]] | None:
    """What the gate serves for this GameServer (listening on `address`), or None (not at the
    gate)."""
    gate = (obj.get("status") or {}).get("gate") or {}
    if not isinstance(gate, Mapping) or gate.get("serving") is not True:
        return None
    if obj["metadata"].get("deletionTimestamp"):
        return None
    return view_from(gate, now), bindings_from(gate, address)


def knock_status(knock: Knock, source: tuple, now: dt.datetime) -> dict[str, Any]:
    return {"knock": {"at": clock.iso(now), "address": str(source[0])[:64], "how": knock.how,
                      "player": knock.player, "outcome": knock.reason}}


class Follower:
    """Keeps a Gate serving what the GameServers' status.gate says; sends knocks as status."""

    def __init__(self, kube, gate: Gate, namespaces: tuple[str, ...] = (),
                 address: str = "0.0.0.0"):
        self.kube, self.gate, self.namespaces = kube, gate, namespaces or (None,)
        # Where the listeners bind. A pod has one address and binds all; a gate in a node's
        # network binds the node's address, so a UDP answer leaves from the address the
        # Service's DNAT sent the query to (with a wildcard bind the kernel picks the source by
        # route, conntrack cannot undo the DNAT, and the client drops the answer).
        self.address = address
        self.loop: asyncio.AbstractEventLoop | None = None
        self.serving: dict[str, tuple[SleepingServer, list[Binding]]] = {}
        self.wanted_now: dict[str, Any] = {}  # the last status.gate seen, served or not
        self.skipped = 0
        self._stop = threading.Event()

    async def on_knock(self, key: str, knock: Knock, source: tuple) -> None:
        ns, name = key.split("/", 1)
        body = knock_status(knock, source, clock.now())
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.kube.patch_status("GameServer", ns, name, body))

    def start(self, loop: asyncio.AbstractEventLoop) -> list[threading.Thread]:
        self.loop = loop
        threads = [threading.Thread(target=self._follow, args=(ns,), daemon=True,
                                    name=f"gate-watch-{ns or 'all'}") for ns in self.namespaces]
        for t in threads:
            t.start()
        return threads

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, ns: str | None) -> None:
        while not self._stop.is_set():
            try:
                items, version = self.kube.list_page("GameServer", ns)
                seen = set()
                for obj in items:
                    seen.add(self._changed(obj, False))
                for key in [k for k in list(self.serving) if _ns(k) == ns or ns is None]:
                    if key not in seen:
                        self._submit(key, None)
                while not self._stop.is_set():
                    for event in self.kube.watch("GameServer", ns, None, version, WATCH_SECONDS):
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            raise _Relist()
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self._changed(obj, event["type"] == "DELETED")
            except _Relist:
                continue
            except Exception as e:
                log.warning("gate: watch of GameServers failed (%s); again in 5 s",
                            type(e).__name__)
                time.sleep(5)

    def _changed(self, obj: Mapping[str, Any], deleted: bool) -> str:
        m = obj.get("metadata") or {}
        key = f"{m.get('namespace')}/{m.get('name')}"
        try:
            want = None if deleted else wanted(obj, clock.now(), self.address)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            self.skipped += 1
            log.warning("gate: %s: status.gate unreadable (%s)", key, type(e).__name__)
            want = None
        self._submit(key, want)
        return key

    def _submit(self, key: str, want) -> None:
        self.wanted_now[key] = want
        if want is None:
            self.wanted_now.pop(key)
        if self.serving.get(key) == want or (want is None and key not in self.serving):
            return
        if want is None:
            self.serving.pop(key, None)
        else:
            self.serving[key] = want
        asyncio.run_coroutine_threadsafe(self._apply(key, want), self.loop)

    async def _apply(self, key: str, want) -> None:
        try:
            if want is None:
                await self.gate.remove_server(key)
                log.info("gate: %s woke or left", key)
            else:
                await self.gate.set_server(key, *want)
                log.info("gate: %s asleep, on %s", key,
                         sorted(p for _, p in self.gate.bound(key).values()))
        except OSError as e:
            self.gate.counts[("error", "bind")] += 1
            log.warning("gate: %s: cannot listen (%s); again in %d s", key,
                        e.strerror or type(e).__name__, BIND_RETRY_SECONDS)
            # Not served: tried again while still wanted (a port held a moment longer, such as
            # by the gate pod this one replaces), not only when the status changes.
            if self.serving.get(key) == want:
                self.serving.pop(key, None)
                asyncio.get_running_loop().call_later(
                    BIND_RETRY_SECONDS, lambda: self._retry(key, want))

    def _retry(self, key: str, want) -> None:
        if key not in self.serving and self.wanted_now.get(key) == want:
            self._submit(key, want)


class _Relist(Exception):
    pass


def _ns(key: str) -> str:
    return key.split("/", 1)[0]


async def serve_cluster(namespaces: tuple[str, ...], metrics_port: int = 0,
                        address: str = "0.0.0.0") -> None:
    from peon.shared.kube import Kube
    kube = Kube(agent="peon-gate")
    follower = Follower(kube, Gate(), namespaces, address)
    follower.gate.on_knock = follower.on_knock
    if metrics_port:
        from prometheus_client import REGISTRY, start_http_server
        from .server import Collector
        REGISTRY.register(Collector(follower.gate))
        start_http_server(metrics_port)
    follower.start(asyncio.get_running_loop())
    try:
        await asyncio.Event().wait()
    finally:
        follower.stop()
        await follower.gate.close()
