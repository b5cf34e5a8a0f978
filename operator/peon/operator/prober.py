"""The player prober: asks servers how many players are on, apart from the reconcile workers.

A reconcile says which servers want asking (`want`) and reads the latest answer (`latest`); it
never waits on a game's network. The prober runs on the event loop with the query libraries'
async calls, at most `concurrency` at once, each server at its own interval, and queues the
server's reconcile only when the answer changed (a player came or went, or the server stopped
answering): a quiet server costs a query per interval and no reconcile.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Hashable

from peon.shared import players
from peon.shared.players import LogRules, Players
from .log_players import LogPlayers, ReadLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    protocol: str  # a2s, minecraft, quake3, or log
    host: str  # log: the pod
    port: int  # log: 0
    interval: float  # seconds between queries
    # log: the pod's namespace, the game's container and its id (a new id is a new log)
    namespace: str = ""
    container: str = ""
    container_id: str = ""
    rules: LogRules | None = None

    def reading(self) -> tuple:
        return (self.namespace, self.host, self.container, self.container_id, self.rules)


async def query(target: Target) -> Players | None:
    return await players.query(target.protocol, target.host, target.port)


class Prober:
    def __init__(self, on_change: Callable[[Hashable], None], concurrency: int = 32,
                 tick: float = 0.25, ask: Callable = query, read_log: ReadLog | None = None):
        self.on_change, self.tick, self.ask = on_change, tick, ask
        self.logs = LogPlayers(read_log)  # protocol log: the game container's log
        self._limit = asyncio.Semaphore(concurrency)
        # Written by reconcile threads (want/forget), read by the loop: plain dict operations.
        self._targets: dict[Hashable, Target] = {}
        self._answers: dict[Hashable, Players | None] = {}
        self._next: dict[Hashable, float] = {}
        self._busy: set[Hashable] = set()
        self._task: asyncio.Task | None = None

    def want(self, key: Hashable, target: Target) -> None:
        if self._targets.get(key) != target:
            old = self._targets.get(key)
            self._targets[key] = target
            self._next[key] = 0.0  # a new or moved target is asked at once
            if old is not None and old.protocol == "log":
                self._answers.pop(key, None)  # a new container's log: nothing known of it yet
                self._forget_logs()

    def forget(self, key: Hashable) -> None:
        self._targets.pop(key, None)
        self._answers.pop(key, None)
        self._next.pop(key, None)
        self._forget_logs()

    def _forget_logs(self) -> None:
        self.logs.forget({t.reading() for t in list(self._targets.values()) if t.protocol == "log"})

    def latest(self, key: Hashable) -> Players | None:
        """The last answer: None while unknown (not asked yet, or no answer)."""
        return self._answers.get(key)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        while True:
            self.ask_due(time.monotonic())
            await asyncio.sleep(self.tick)

    def ask_due(self, now: float) -> list[asyncio.Task]:
        tasks = []
        for key, target in list(self._targets.items()):
            if key in self._busy or self._next.get(key, 0.0) > now:
                continue
            self._busy.add(key)
            self._next[key] = now + target.interval
            tasks.append(asyncio.get_running_loop().create_task(self._probe(key, target)))
        return tasks

    async def _probe(self, key: Hashable, target: Target) -> None:
        try:
            async with self._limit:
                try:
                    if target.protocol == "log":
                        answer = await self.logs.ask(target.namespace, target.host,
                                                     target.container, target.container_id,
                                                     target.rules)
                    else:
                        answer = await self.ask(target)
                except Exception as e:  # whatever a game answers, the prober keeps asking
                    log.debug("player query for %s failed: %s", key, type(e).__name__)
                    answer = None  # unknown, never "nobody is on"
            if self._targets.get(key) != target:
                return  # forgotten or moved meanwhile
            old = self._answers.get(key)
            # News: another count, or (the same count) other names, as status.players shows them
            changed = key not in self._answers or old != answer or (
                old is not None and answer is not None and old.names != answer.names)
            self._answers[key] = answer
            if changed:
                self.on_change(key)
        finally:
            self._busy.discard(key)
