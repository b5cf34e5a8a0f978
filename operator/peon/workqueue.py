"""Keys to reconcile, client-go's workqueue in miniature: a key is never worked on twice at
once, adds while it is worked on coalesce into one more run, and delayed adds replace each
other (the latest wins)."""
from __future__ import annotations

import asyncio

from .cache import Key


class WorkQueue:
    """Keys to reconcile. A key is never worked on twice at once; adds while it is being
    worked on coalesce into one more run (client-go's workqueue, in miniature)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self.add, key)

    async def get(self) -> Key:
        key = await self._queue.get()
        self._pending.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def idle(self) -> bool:
        return not (self._pending or self._active or self._dirty)
