"""Keys to reconcile, client-go's workqueue in miniature: a key is never worked on twice at
once, adds while it is worked on coalesce into one more run, and delayed adds replace each
other (the latest wins)."""
from __future__ import annotations

import asyncio
import threading

from .cache import Key


class WorkQueue:
    """Keys to reconcile. A key is never worked on twice at once; adds while it is being
    worked on coalesce into one more run (client-go's workqueue, in miniature). An urgent key
    (a new or changed spec, to build) is taken before the others (a look again at a server
    already built: its pod moved on, a timer): while 1,000 servers arrive, the workers build
    them first instead of writing Pending for the ones built a moment ago."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[None] = asyncio.Queue()  # one token per pending key
        self._urgent: dict[Key, None] = {}  # pending keys, in order (insertion-ordered sets)
        self._pending: dict[Key, None] = {}
        self._active: set[Key] = set()
        self._dirty: dict[Key, bool] = {}  # added while active -> urgent
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop its workers wait on
        self._loop_thread: int | None = None

    def add(self, key: Key, urgent: bool = False) -> None:
        """Queue `key`. Safe from any thread: a reconcile thread's add is handed to the loop,
        since an asyncio queue's waiting getter is only woken from its own loop (an add made
        straight from a worker thread could sit unseen until some other event came)."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._add, key, urgent)
            return
        self._add(key, urgent)

    def _add(self, key: Key, urgent: bool = False) -> None:
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
        elif key in self._urgent:
            return
        elif key in self._pending:
            if urgent:  # moves ahead; still one token
                del self._pending[key]
                self._urgent[key] = None
        else:
            (self._urgent if urgent else self._pending)[key] = None
            self._queue.put_nowait(None)

    def add_after(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._add, key)

    async def get(self) -> Key:
        if self._loop is None:
            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        await self._queue.get()
        keys = self._urgent if self._urgent else self._pending
        key = next(iter(keys))
        del keys[key]
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._add(key, self._dirty.pop(key))

    def idle(self) -> bool:
        return not (self._urgent or self._pending or self._active or self._dirty)
