"""The users' Secrets that servers name, read one by one: never a list or watch of every Secret.

A GameServer names Secrets of its user (`settings[].secretRef`, `backup.store.secretRef`); a
change to one rolls the servers that mount it (their pod template carries its digest). The
operator used to list and watch every Secret of its namespaces, so it held (a digest of) every
credential in the cluster, service-account tokens included. Now only the Secrets a server names
are read, by name: the reconcile reads one it lacks (`Controller.secret_view`), and this
refresher reads each named one again in turn, so a changed password rolls its servers within
`interval` seconds. Why not a watch per name: each is a connection and a thread of its own,
for as many Secrets as servers; a read served from the API server's watch cache
(resourceVersion=0) costs it less than a watch's bookkeeping, and the pace below bounds them.

The operator's own Secrets (`<server>-env`) come through a watch with its label selector
(watches.WATCHED): the API server filters, and no other Secret reaches the operator.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

log = logging.getLogger(__name__)

SecretKey = tuple[str, str]  # (namespace, name)


def refresh_plan(named: Iterable[SecretKey], interval: float, rate: float) -> tuple[list[SecretKey], float]:
    """The Secrets to read this round, and the pause between two reads: the round takes
    `interval` seconds, or longer when reading every Secret in it would exceed `rate` reads a
    second."""
    keys = sorted(set(named))
    if not keys:
        return [], interval
    return keys, max(interval / len(keys), 1.0 / rate)


class SecretRefresher:
    """A thread that reads each named Secret in turn. `named()` lists what servers name now;
    `read(key)` reads one (None when it does not exist) and reports whether it was news."""

    def __init__(self, named: Callable[[], Iterable[SecretKey]],
                 read: Callable[[SecretKey], bool], on_news: Callable[[SecretKey], None],
                 forget: Callable[[set[SecretKey]], None],
                 interval: float = 30.0, rate: float = 20.0):
        self.named, self.read, self.on_news, self.forget = named, read, on_news, forget
        self.interval, self.rate = interval, rate
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="secret-refresh")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(0 if self.round() else self.interval):
            pass

    def round(self) -> bool:
        """One pass over the named Secrets. True when there was something to read."""
        named = set(self.named())
        self.forget(named)  # views of Secrets no server names any more
        keys, pause = refresh_plan(named, self.interval, self.rate)
        for key in keys:
            if self.stopping.wait(pause):
                return True
            try:
                if self.read(key):
                    self.on_news(key)
            except Exception as e:  # an API error: the next round reads it again
                log.warning("reading Secret %s/%s failed: %s", key[0], key[1], e)
        return bool(keys)
