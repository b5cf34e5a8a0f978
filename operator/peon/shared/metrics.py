"""Prometheus metrics: servers by phase, reconciles, API writes. Served by `--metrics-port`."""
from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter("peon_reconciles_total", "GameServer reconciles, by result", ["result"])
RECONCILE_SECONDS = Histogram("peon_reconcile_duration_seconds", "Time one reconcile takes",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_WRITES = Counter("peon_api_writes_total", "Writes the operator made to the API",
                     ["verb", "kind"])
SERVERS = Gauge("peon_gameservers", "GameServers by phase", ["phase"])
LEADING = Gauge("peon_leading", "1 in the replica that reconciles (the leader), else 0")
BACKUPS = Counter("peon_backups_total", "Backup runs finished, by result", ["result"])


PHASES = ("Pending", "Starting", "Running", "Stopping", "Stopped", "Error")


def count_servers(phases: dict) -> None:
    """phases: key -> phase, for every GameServer the operator knows, counted when scraped:
    counting after every reconcile cost O(servers) each, O(servers²) for a sweep."""
    for phase in PHASES:
        # list(): one C-level copy, safe while reconcile threads change the dict
        SERVERS.labels(phase).set_function(lambda p=phase: list(phases.values()).count(p))


class OffsiteAges(Collector):
    """peon_offsite_backup_age_seconds: the age of each server's newest off-site snapshot (the
    loss window: the play a lost node would take with it), from the status the cache holds,
    computed when scraped (an age written into status would change it every second)."""

    def __init__(self) -> None:
        self.gameservers: dict = {}
        self.now = lambda: None

    def watch(self, gameservers: dict, now) -> None:
        self.gameservers, self.now = gameservers, now

    def collect(self):
        from . import clock
        family = GaugeMetricFamily("peon_offsite_backup_age_seconds",
                                   "Age of the newest off-site snapshot of each server with a "
                                   "store", labels=["namespace", "gameserver"])
        t = self.now()
        for (ns, name), gs in list(self.gameservers.items()):
            when = clock.parse(((gs.get("status") or {}).get("backup") or {}).get("lastOffsiteTime"))
            if when is not None and t is not None:
                family.add_metric([ns, name], max(0.0, (t - when).total_seconds()))
        yield family


OFFSITE_AGES = OffsiteAges()
REGISTRY.register(OFFSITE_AGES)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr)
