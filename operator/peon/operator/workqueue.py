"""Keys to reconcile, client-go's workqueue in miniature: a key is never worked on twice at
once, adds while it is worked on coalesce into one more run, and delayed adds replace each
other (the latest wins). News of a server's children and pods comes `soon` (SOON seconds),
gathered: one change of a server makes a burst of events (its pod scheduled, running, ready;
then its ReplicaSet's and Deployment's ready counts), each news for the cache, and each once
woke a reconcile of its own."""
from __future__ import annotations

import asyncio
import threading

from .cache import Key

# Seconds a child's or pod's news waits for the rest of its burst before its server is
# reconciled.
SOON = 0.5


class WorkQueue:
    """Keys to reconcile. A key is never worked on twice at once; adds while it is being
    worked on coalesce into one more run (client-go's workqueue, in miniature)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._soon: dict[Key, asyncio.TimerHandle] = {}  # keys gathering news (add_soon)
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

    def add_soon(self, key: Key, delay: float = SOON) -> None:
        """Queue `key` in `delay` seconds, unless it is queued, or to be, already: news from
        the same burst in the meantime adds nothing. Safe from any thread, as add."""
        if self._loop is None or not self._loop.is_running():  # nothing to wait on: at once
            self._add(key)
        elif threading.get_ident() != self._loop_thread:
            # Most of a burst's events find their server's key gathering already; they need
            # not wake the loop. Read from this thread, a key seen queued or gathering is a
            # reconcile that starts after this news was cached, so it reads it; one not seen
            # is handed to the loop, which checks again.
            if not self._waiting(key):
                self._loop.call_soon_threadsafe(self._add_soon, key, delay)
        else:
            self._add_soon(key, delay)

    def _waiting(self, key: Key) -> bool:
        """Is a reconcile of `key` yet to start: queued, gathering, or to run again?"""
        return key in self._pending or key in self._soon or key in self._dirty

    def _add_soon(self, key: Key, delay: float) -> None:
        if self._waiting(key):
            return
        self._soon[key] = self._loop.call_later(delay, self._add, key)

    def _add(self, key: Key) -> None:
        soon = self._soon.pop(key, None)
        if soon is not None:  # queued now: the gathering is over
            soon.cancel()
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
        return not (self._pending or self._active or self._dirty or self._soon)
