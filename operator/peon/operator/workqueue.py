"""Keys to reconcile, client-go's workqueue in miniature: a key is never worked on twice at
once, adds while it is worked on coalesce into one more run, and delayed adds replace each
other (the latest wins)."""
from __future__ import annotations

import asyncio
import threading

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
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop its workers wait on
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the workers will wait on, known before they start: the watch streams'
        threads queue from the start, followers' too, whose workers may never start."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    def add(self, key: Key) -> None:
        """Queue `key`. Safe from any thread: a reconcile thread's add is handed to the loop,
        since an asyncio queue's waiting getter is only woken from its own loop (an add made
        straight from a worker thread could sit unseen until some other event came)."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._add, key)
            return
        self._add(key)

    def _add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._add, key)

    async def get(self) -> Key:
        if self._loop is None:
            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        key = await self._queue.get()
        self._pending.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self._add(key)

    def idle(self) -> bool:
        return not (self._pending or self._active or self._dirty)
