"""Prometheus metrics: servers by phase, reconciles, API writes. Served by `--metrics-port`."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("peon_reconciles_total", "GameServer reconciles, by result", ["result"])
RECONCILE_SECONDS = Histogram("peon_reconcile_duration_seconds", "Time one reconcile takes",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_WRITES = Counter("peon_api_writes_total", "Writes the operator made to the API",
                     ["verb", "kind"])
DRY_RUNS = Counter("peon_api_dry_runs_total", "Server-side dry runs (a server's first build is "
                   "tried whole before it is made); they write nothing", ["kind"])
SERVERS = Gauge("peon_gameservers", "GameServers by phase", ["phase"])
LEADING = Gauge("peon_leading", "1 in the replica that reconciles (the leader), else 0")
BACKUPS = Counter("peon_backups_total", "Backup runs finished, by result", ["result"])


def count_servers(phases: dict) -> None:
    """phases: (namespace, name) -> phase, for every GameServer the operator knows."""
    totals: dict[str, int] = {}
    for p in phases.values():
        totals[p] = totals.get(p, 0) + 1
    for phase in ("Pending", "Starting", "Running", "Stopping", "Stopped", "Error"):
        SERVERS.labels(phase).set(totals.get(phase, 0))


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr)
