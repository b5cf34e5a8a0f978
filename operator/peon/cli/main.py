"""The user's two commands, `peon` and `kubectl peon` (the `kubectl-peon` plugin): one parser,
peon.py's commands and kubectl_peon.py's."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from peon import __version__

from . import kubectl_peon
from .argv import normalize_argv
from .context import Ctx
from .peon import cmd_backup, cmd_convert, cmd_plan_convert


def build_parser(prog: str = "peon") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Peon's commands for game-server users.",
                                 epilog="The tools Peon's Jobs run are `peon archive` and `peon store` "
                                 "(`peon archive --help`); `peon archive restore FILE DIR` restores a "
                                 "downloaded backup.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="turn a PEON REST payload (JSON) into GameServer YAML")
    c.add_argument("payload", help="the payload file, or - for standard input")
    c.add_argument("-n", "--namespace", help="put the objects in this namespace")
    c.add_argument("--secret-env", action="store_true",
                   help="put env settings in a Secret of their own, named by secretRef")
    c.add_argument("--game", metavar="FILE",
                   help="the payload's Game (YAML, as `kubectl get game NAME -o yaml` prints "
                        "it): a file whose name is not a plain one keeps that name through path")
    c.set_defaults(fn=cmd_convert)
    pl = sub.add_parser("plan", help="PEON's game plans (plan.json)")
    plsub = pl.add_subparsers(dest="action", required=True)
    plc = plsub.add_parser("convert", help="turn a PEON plan.json into Game YAML")
    plc.add_argument("plan", help="the plan.json file, or - for standard input")
    plc.add_argument("--uid", help="the Game's name (default: the plan's game_uid)")
    plc.set_defaults(fn=cmd_plan_convert)
    b = sub.add_parser("backup", help="take a backup (`backup NAME`), or download one (`backup "
                       "download NAME`) from outside the cluster")
    bsub = b.add_subparsers(dest="action", required=True)
    bd = bsub.add_parser("download", help="stream one Succeeded backup (local archive or "
                         "off-site snapshot) into a local file, checked against its checksum")
    bd.add_argument("name", help="the GameServerBackup")
    bd.add_argument("-n", "--namespace", help="its namespace (the context's by default)")
    bd.add_argument("-o", "--output", help="the file to write (NAME.tar.gz by default)")
    bd.add_argument("--image", help="the image for the short-lived pod (by default the one the "
                    "backup's Job ran: the operator's)")
    b.set_defaults(fn=cmd_backup)
    kubectl_peon.add_backup_create(bsub)  # `backup create NAME`, and `backup NAME` for short
    kubectl_peon.add_commands(sub)  # ls, start, stop, restart, wake, backups, restore, logs, status
    return ap


def main(argv: list[str] | None = None, prog: str = "peon") -> int:
    from .kubectl_peon import normalize_argv
    args = build_parser(prog).parse_args(normalize_argv(sys.argv[1:] if argv is None else argv))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())


def run(argv: Sequence[str], ctx: Ctx) -> int:
    """Parse and run one command line in `ctx` (the tests' way in)."""
    args = build_parser(kubectl_peon.PROG).parse_args(normalize_argv(argv))
    return args.fn(args, ctx) if getattr(args.fn, "takes_ctx", False) else args.fn(args)


def main(argv: list[str] | None = None, prog: str = "peon") -> int:
    args = build_parser(prog).parse_args(normalize_argv(sys.argv[1:] if argv is None else argv))
    return args.fn(args)


def kubectl_peon_main(argv: list[str] | None = None) -> int:
    return main(argv, prog=kubectl_peon.PROG)


if __name__ == "__main__":
    sys.exit(main())
