"""`peon-operator`: run the operator against the current kubeconfig (or in-cluster config)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf

from peon import __version__


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="peon-operator", description=__doc__)
    ap.add_argument("-n", "--namespace", action="append", default=[],
                    help="watch only this namespace (repeatable); all namespaces when omitted")
    ap.add_argument("--workers", type=int, default=8, help="GameServers reconciled at once")
    ap.add_argument("--leader-elect", action="store_true",
                    help="run as one of several replicas: only the holder of a Lease reconciles")
    ap.add_argument("--leader-election-id", default="peon-operator", help="the Lease's name")
    ap.add_argument("--leader-election-namespace", default=None,
                    help="the Lease's namespace (default: the operator's own)")
    ap.add_argument("--liveness", default=None,
                    help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    ap.add_argument("--job-image", default=os.environ.get("PEON_JOB_IMAGE"),
                    help="image for backup and restore Jobs (the operator's own; $PEON_JOB_IMAGE)")
    ap.add_argument("--metrics-port", type=int, default=None,
                    help="serve Prometheus metrics on this port (off when omitted)")
    ap.add_argument("--log-format", choices=["plain", "json"], default="plain",
                    help="json: one JSON object a line, for log collectors (kopf's formatter)")
    ap.add_argument("--secret-refresh", type=float, default=30.0, metavar="SECONDS",
                    help="read each Secret a server names again this often (a changed one "
                         "rolls its servers); the operator never lists other Secrets")
    ap.add_argument("--notify-allow-cidr", action="append", default=[], metavar="CIDR",
                    help="let webhooks reach this network (repeatable), though it is loopback, "
                         "link-local, private or otherwise refused by default")
    ap.add_argument("--store-list-interval", type=float, default=3600.0, metavar="SECONDS",
                    help="list each server's off-site store this often (and once at start) for "
                         "snapshots with no GameServerBackup, such as a former cluster's")
    from . import wake
    wake.main_args(ap)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = ap.parse_args(argv)
    from peon.shared import notify
    try:
        notify_allowed = notify.allowed_networks(args.notify_allow_cidr)
    except ValueError as e:
        ap.error(f"--notify-allow-cidr: {e}")
    try:
        gate = wake.config_from(args)
    except ValueError as e:
        ap.error(str(e))

    if args.log_format == "json":
        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    else:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf's own per-event debug chatter drowns the operator's messages.
    logging.getLogger("kopf").setLevel(logging.INFO if args.verbose else logging.WARNING)
    from . import handlers  # importing handlers registers them
    from peon.shared import metrics
    from .namespaces import Scope
    leader_election = None
    if args.leader_elect:
        from .leader import own_namespace
        leader_election = (args.leader_election_id,
                           args.leader_election_namespace or own_namespace())
    memo = kopf.Memo(settings=handlers.Settings(
        workers=args.workers, job_image=args.job_image, namespaces=tuple(args.namespace),
        scan_cluster=Scope(tuple(args.namespace)).patterned,
        leader_election=leader_election, secret_refresh=args.secret_refresh,
        store_list_interval=args.store_list_interval,
        notify_allowed=notify_allowed, gate=gate))
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    from .heap import collect_less
    collect_less()
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        # Replicas are coordinated by leader election (leader.py), not kopf's peering.
        standalone=True,
        liveness_endpoint=args.liveness,
        memo=memo,
    ))
    # kopf has stopped and the cleanup has run (watches told to stop, the Lease released).
    # Threads may still sit in a blocking read (a watch's stream, a Lease renewal): left to
    # the interpreter's finalisation, such a daemon thread waking in the middle of it can
    # abort the process (SIGABRT, seen once in CI on a SIGTERM'd replica). Nothing is left
    # to do, so the process ends here, with its logs flushed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
