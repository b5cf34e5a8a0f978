"""Is the operator alive: kopf's liveness endpoint (`--liveness`) asks `stuck`, and a probe
that finds a stuck stream or reconcile fails it (HTTP 500), so the kubelet restarts the pod.

A stream is stuck when its thread died, or when it has shown no progress (an event, a
bookmark, a list, a new watch, a retry after an error) for longer than its longest watch and a
margin: a watch ends at the API server's timeout (at most watches.WATCH_SECONDS), so a stream
silent for longer hangs on a connection that died without a word. An API server that is away
is not stuck: the stream retries, which is progress, and a restart would not help. A reconcile
is stuck when it has run longer than any reconcile should (every API call in it is bounded).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

STREAM_SILENCE = 600 + 120.0  # the longest watch, and a margin
RECONCILE_SECONDS = 600.0


@dataclass(frozen=True)
class Progress:
    """One stream or worker as the probe sees it."""
    name: str
    alive: bool
    last: float  # time.monotonic() of its last progress (for a worker: when its reconcile began)


def stuck(streams: Iterable[Progress], workers: Iterable[Progress], now: float,
          silence: float = STREAM_SILENCE, longest: float = RECONCILE_SECONDS) -> list[str]:
    """What is stuck, said so a person reading the probe's answer knows where to look."""
    out = [f"stream {s.name}: its thread ended" for s in streams if not s.alive]
    out += [f"stream {s.name}: no progress for {now - s.last:.0f} s" for s in streams
            if s.alive and now - s.last > silence]
    out += [f"reconcile of {w.name}: running for {now - w.last:.0f} s" for w in workers
            if now - w.last > longest]
    return out
