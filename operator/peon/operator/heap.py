"""What the cyclic garbage collector walks (issue 24, item 6).

A full collection walks every object the collector tracks. In the operator most of them never
die: the imported modules (kopf, the kubernetes client's models) and the cache, whose objects
are decoded JSON (dicts, lists and strings, which hold no cycles and are freed by reference
counting when a newer version replaces them). The collector took 7.8% of a converging
operator's CPU and 29% of a restarted one's (a `gc.callbacks` probe, N=1,000), and a
reconcile's CPU grew with the cache: 0.29 against 0.40 s per 1,000 reconciles with 1,000 and
10,000 servers cached (offline, the same servers looked at), the same 0.33 to 0.36 s once the
heap was frozen. So the heap is frozen (`gc.freeze`: moved out of the collector's sight)
after the imports, after the first lists, and whenever the cache has grown by a quarter.

The cost: an object alive at a freeze that later dies in a cycle is never collected. Freezes
come only with growth past the largest cache yet, so a process makes a few dozen at most
(1.25 ** 30 is 800-fold growth), each keeping what was in flight at that moment."""
from __future__ import annotations

import gc
from dataclasses import dataclass

YOUNGEST_EVERY = 10_000  # allocations between collections of the youngest generation (700)


def collect_less() -> None:
    """At the start, after the imports: freeze them, and collect the youngest generation after
    10,000 allocations instead of 700. The operator's garbage is JSON decoded into dicts and
    lists, freed by reference counting; a collection every 700 of them promoted short-lived
    ones into the older generations, whose collections walk the cache. bench/converge.py
    --n 1000 --no-floor --idle 5, two runs each: 20.6 and 18.9 ms of CPU per server before,
    17.4 and 18.0 after; a restart's look at every server 4.8 and 3.2 s before, 3.2 and 3.2 s
    after; peak RSS 101 MiB before, 103 after."""
    gc.set_threshold(YOUNGEST_EVERY, 20, 10)
    gc.freeze()


@dataclass
class Freezer:
    """Freezes the heap when the cache holds a quarter more objects than at the last freeze
    (and at least `least`)."""
    growth: float = 1.25
    least: int = 500
    frozen_at: int = 0

    def due(self, cached: int) -> bool:
        """Has the cache grown enough since the last freeze?"""
        return cached >= max(self.least, self.frozen_at * self.growth)

    def freeze(self, cached: int) -> None:
        gc.freeze()
        self.frozen_at = max(self.frozen_at, cached)

    def note(self, cached: int) -> bool:
        """Freeze when due; True when it did."""
        if not self.due(cached):
            return False
        self.freeze(cached)
        return True
