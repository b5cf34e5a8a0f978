"""`peon-gate`: the wake gate's command line (issue 25).

    peon-gate --cluster [-n NS ...] [--metrics-port N]   what the operator puts at the gate
    peon-gate servers.json [--metrics-port N]            the servers a JSON file names, by hand
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .cluster import serve_cluster
from .server import serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="peon-gate", description="Answer for sleeping game servers "
                                 "at their own addresses and hand on who knocks (issue 25).")
    ap.add_argument("servers", nargs="?", help="a JSON file: key -> {view, bindings} (see "
                    "server.parse_servers), for trying the gate by hand; without it, --cluster")
    ap.add_argument("--cluster", action="store_true", help="serve the GameServers the operator "
                    "puts at the gate (status.gate) and write knocks as status.knock")
    ap.add_argument("-n", "--namespace", action="append", default=[],
                    help="with --cluster: only this namespace (repeatable); all when omitted")
    ap.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here")
    ap.add_argument("--listen-address", default="0.0.0.0",
                    help="with --cluster: the address the sleeping servers' ports listen on "
                         "(in a node's network, the pod's own address: $POD_IP from the "
                         "downward API)")
    args = ap.parse_args(argv)
    if bool(args.servers) == args.cluster:
        ap.error("give either a servers file or --cluster")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # As a container's PID 1 the default SIGTERM action never applies: without a handler the
    # gate would hold its listeners for the whole grace period, and its successor (in a node's
    # network, the same ports) could not bind them.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.cluster:
            asyncio.run(serve_cluster(tuple(args.namespace), args.metrics_port,
                                      args.listen_address))
        else:
            asyncio.run(serve(args.servers, args.metrics_port))
    except (OSError, ValueError) as e:
        raise SystemExit(f"peon-gate: {e}") from None
    except KeyboardInterrupt:
        pass


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the gate's task and closes its listeners


if __name__ == "__main__":
    main()
