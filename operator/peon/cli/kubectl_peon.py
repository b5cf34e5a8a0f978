"""`kubectl peon` (the `kubectl-peon` plugin; the same commands under `peon`): a person's view
of their servers and the verbs PEON had, from a terminal.

Every write here is one of actions.py's: annotations on a GameServer's metadata (a JSON merge
patch that names nothing but metadata), or a GameServerBackup or GameServerRestore object of
its own. Nothing here writes a GameServer's spec, so a server kept in Git shows no drift.

The commands take a Ctx (context.py: the API, the clock, the output) so the tests drive them
through FakeKube; what they print is decided in text.py, views.py and decisions.py.

Exit codes, as scripts want them: 0 done, 1 the cluster said no or a wait failed, 2 bad usage.
"""
from __future__ import annotations

import argparse
import codecs

from peon import LABEL_GAMESERVER
from peon.shared import backup as bk, clock

from peon.shared.pods import log_pod
from .context import Ctx, Failure, annotate, entry, get_server, namespace_of
from .decisions import parse_when, run_outcome, start_refusal
from .text import dump, human_size
from .views import backups_table, ls_table, status_text

# actions (and what it imports: the model, the kubernetes client) is imported where it is
# used, so `kubectl peon --help` starts fast.

PROG = "kubectl peon"
SERVER_CONTAINER = bk.SERVER_CONTAINER
POLL_SECONDS = 1.0


# --- the commands ------------------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace, ctx: Ctx) -> int:
    from kubernetes.client.rest import ApiException
    ns = namespace_of(args, ctx)
    servers = ctx.kube.list("GameServer", ns)
    missing = []
    if args.names:
        found = {g["metadata"]["name"] for g in servers}
        missing = [n for n in args.names if n not in found]
        servers = [g for g in servers if g["metadata"]["name"] in args.names]
    if args.output in ("json", "yaml"):
        ctx.out.write(dump(servers, args.output))
    elif args.output == "name":
        for g in sorted(servers, key=lambda g: g["metadata"]["name"]):
            ctx.print(f"gameserver.peon.dev/{g['metadata']['name']}")
    elif servers:
        try:
            backups = ctx.kube.list("GameServerBackup", ns)
        except ApiException as e:
            if e.status != 403:
                raise
            backups = None  # not allowed to list them: the servers' status says when
        ctx.out.write(ls_table(servers, backups, ctx.now(), args.all_namespaces))
    elif not missing:
        print("No resources found" + (f" in {ns} namespace." if ns else "."), file=ctx.err)
    for n in missing:
        print(f'error: gameserver "{n}" not found in namespace "{ns}"', file=ctx.err)
    return 1 if missing else 0


def cmd_backups(args: argparse.Namespace, ctx: Ctx) -> int:
    ns = namespace_of(args, ctx)
    if args.name and ns is not None:
        get_server(ctx, ns, args.name)
    runs = ctx.kube.list("GameServerBackup", ns)
    if args.name:
        runs = [b for b in runs if (b.get("spec") or {}).get("gameServer") == args.name]
    if args.output in ("json", "yaml"):
        ctx.out.write(dump(runs, args.output))
    elif args.output == "name":
        for b in runs:
            ctx.print(f"gameserverbackup.peon.dev/{b['metadata']['name']}")
    elif runs:
        ctx.out.write(backups_table(runs, ctx.now(), args.all_namespaces))
    else:
        where = f" in {ns} namespace" if ns else ""
        print(f"No backups found{where}" + (f" for gameserver/{args.name}." if args.name else "."),
              file=ctx.err)
    return 0


def cmd_start(args: argparse.Namespace, ctx: Ctx) -> int:
    from peon.shared import actions
    now = ctx.now()
    stop_at = None
    if getattr(args, "for_", None):
        stop_at = now + actions.parse_interval(args.for_)
    elif getattr(args, "until", None):
        stop_at = parse_when(args.until, now)
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    refusal = start_refusal(gs)
    if refusal:
        raise Failure(refusal)
    annotate(ctx, gs, actions.start_patch(now, stop_at))
    verb = "wake" if args.verb == "wake" else "start"
    ctx.print(f"gameserver/{args.name} {verb} requested"
              + (f" (until {clock.iso(stop_at)})" if stop_at else ""))
    return 0


def cmd_stop(args: argparse.Namespace, ctx: Ctx) -> int:
    from peon.shared import actions
    now = ctx.now()
    at = None
    if args.in_:
        at = now + actions.parse_interval(args.in_)
    elif args.at:
        at = parse_when(args.at, now)
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    annotate(ctx, gs, actions.stop_patch(at or now, now))
    ctx.print(f"gameserver/{args.name} stop requested ({f'at {clock.iso(at)}' if at else 'now'})")
    return 0


def cmd_restart(args: argparse.Namespace, ctx: Ctx) -> int:
    from peon.shared import actions
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    now = ctx.now()
    annotate(ctx, gs, actions.restart_patch(now))
    note = ""
    if (gs.get("status") or {}).get("phase") == "Stopped":
        note = " (it is stopped: it starts with a new pod when it runs again)"
    ctx.print(f"gameserver/{args.name} restart requested{note}")
    return 0


def cmd_update(args: argparse.Namespace, ctx: Ctx) -> int:
    from peon.shared import actions
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    annotate(ctx, gs, actions.update_patch(ctx.now()))
    note = ""
    if (gs.get("status") or {}).get("phase") == "Stopped":
        note = " (it is stopped: it pulls its image again when it runs again)"
    elif (gs.get("spec") or {}).get("maintenance") is not None:
        note = " (when its maintenance rules let it restart: kubectl peon status says)"
    ctx.print(f"gameserver/{args.name} update requested{note}")
    return 0


def _wait_run(ctx: Ctx, kind: str, ns: str, name: str, timeout: float) -> int:
    label = kind.lower()
    deadline = ctx.monotonic() + timeout
    while True:
        obj = ctx.kube.get(kind, ns, name)
        if obj is None:
            raise Failure(f"{label}/{name} was deleted while waiting for it")
        done, ok, message = run_outcome(obj)
        if done and ok:
            st = obj.get("status") or {}
            size = f" ({human_size(st['size'])})" if isinstance(st.get("size"), int) else ""
            ctx.print(f"{label}/{name} succeeded{size}")
            return 0
        if done:
            raise Failure(f"{label}/{name} failed: {message or 'no message'}")
        if ctx.monotonic() >= deadline:
            phase = (obj.get("status") or {}).get("phase") or "not started"
            raise Failure(f"timed out after {timeout:g}s waiting for {label}/{name} "
                          f"(phase: {phase})")
        ctx.sleep(POLL_SECONDS)


def cmd_backup_create(args: argparse.Namespace, ctx: Ctx) -> int:
    from peon.shared import actions
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    made = ctx.kube.create(actions.manual_backup(gs, ctx.now()))
    name = made["metadata"]["name"]
    ctx.print(f"gameserverbackup/{name} created")
    return _wait_run(ctx, "GameServerBackup", ns, name, args.timeout) if args.wait else 0


def cmd_restore(args: argparse.Namespace, ctx: Ctx) -> int:
    from peon.shared import actions
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    b = ctx.kube.get("GameServerBackup", ns, args.backup)
    if b is None:
        raise Failure(f'gameserverbackup "{args.backup}" not found in namespace "{ns}"')
    of = (b.get("spec") or {}).get("gameServer")
    if of != args.name:
        raise Failure(f"gameserverbackup/{args.backup} is a backup of gameserver/{of}, "
                      f"not of gameserver/{args.name}")
    phase = (b.get("status") or {}).get("phase")
    if phase != bk.SUCCEEDED:
        raise Failure(f"gameserverbackup/{args.backup} is {phase or 'not started'}: only a "
                      "Succeeded backup can be restored")
    made = ctx.kube.create(actions.restore_object(gs, args.backup, ctx.now()))
    name = made["metadata"]["name"]
    ctx.print(f"gameserverrestore/{name} created (gameserver/{args.name} from {args.backup}; "
              "the server stops while the world is swapped)")
    return _wait_run(ctx, "GameServerRestore", ns, name, args.timeout) if args.wait else 0


def cmd_logs(args: argparse.Namespace, ctx: Ctx) -> int:
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    pod = log_pod(ctx.kube.list("Pod", ns, f"{LABEL_GAMESERVER}={args.name}"), args.name)
    if pod is None:
        phase = (gs.get("status") or {}).get("phase") or "unknown"
        raise Failure(f"gameserver/{args.name} has no pod (phase: {phase})")
    if ctx.pod_logs is None:
        raise Failure("no way to read logs here")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in ctx.pod_logs(ns, pod["metadata"]["name"], SERVER_CONTAINER, args.follow,
                              args.tail, args.previous):
        ctx.out.write(decoder.decode(chunk))
        ctx.out.flush()
    ctx.out.write(decoder.decode(b"", final=True))
    ctx.out.flush()
    return 0


def cmd_status(args: argparse.Namespace, ctx: Ctx) -> int:
    from kubernetes.client.rest import ApiException
    ns = namespace_of(args, ctx)
    gs = get_server(ctx, ns, args.name)
    if args.output in ("json", "yaml"):
        ctx.out.write(dump(gs, args.output, single=True))
        return 0
    try:
        events = ctx.kube.list("Event", ns)
    except ApiException as e:
        if e.status != 403:
            raise
        events = []
    ctx.out.write(status_text(gs, events, ctx.now()))
    return 0


# --- the parser ------------------------------------------------------------------------------------

def _ns_flags(p: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", help="the namespace (the kubeconfig context's by default)")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true",
                       help="every namespace (adds a NAMESPACE column)")


def _timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="wait until it Succeeded (exit 0) or Failed (exit 1, with its message)")
    p.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                   help="how long --wait waits (default 600); past it, exit 1")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The commands `kubectl peon` adds to `peon`'s (main.py calls this)."""
    p = sub.add_parser("ls", help="list game servers: phase, address, players, why, last backup")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these servers")
    _ns_flags(p, all_namespaces=True)
    p.add_argument("-o", "--output", choices=("json", "yaml", "name"))
    p.set_defaults(fn=entry(cmd_ls))

    for verb, text in (("start", "start a server (a wake-up; spec.state: Stopped still wins)"),
                       ("wake", "start a server for one session, with no stop time of its own")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("name", help="the GameServer")
        _ns_flags(p)
        if verb == "start":
            g = p.add_mutually_exclusive_group()
            g.add_argument("--for", dest="for_", metavar="INTERVAL",
                           help="stop again after this long (5h, 20m, 2d; a bare number is minutes)")
            g.add_argument("--until", metavar="TIME",
                           help="stop again at this time (ten-digit Unix time, or RFC 3339)")
        p.set_defaults(fn=entry(cmd_start), verb=verb)

    p = sub.add_parser("stop", help="stop a server now or later (the world is kept)")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--in", dest="in_", metavar="INTERVAL", help="stop after this long (20m, 2h)")
    g.add_argument("--at", metavar="TIME", help="stop at this time (ten-digit Unix time, or RFC 3339)")
    p.set_defaults(fn=entry(cmd_stop))

    p = sub.add_parser("restart", help="give a server a new pod")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.set_defaults(fn=entry(cmd_restart))

    p = sub.add_parser("update", help="restart a server with its image pulled again (a moving tag)")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.set_defaults(fn=entry(cmd_update))

    p = sub.add_parser("backups", help="list backups (of one server, with NAME)")
    p.add_argument("name", nargs="?", help="only this GameServer's")
    _ns_flags(p, all_namespaces=True)
    p.add_argument("-o", "--output", choices=("json", "yaml", "name"))
    p.set_defaults(fn=entry(cmd_backups))

    p = sub.add_parser("restore", help="restore a server's world from one of its backups")
    p.add_argument("name", help="the GameServer")
    p.add_argument("backup", help="the Succeeded GameServerBackup")
    _ns_flags(p)
    _timeout(p)
    p.set_defaults(fn=entry(cmd_restore))

    p = sub.add_parser("logs", help="the server container's log")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows")
    p.add_argument("--tail", type=int, default=None, metavar="N",
                   help="only the last N lines (-1, the default: all)")
    p.add_argument("-p", "--previous", action="store_true",
                   help="the log of the container's previous run (after a crash)")
    p.set_defaults(fn=entry(cmd_logs))

    p = sub.add_parser("status", help="phase, why, address, players, conditions and recent Events")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.add_argument("-o", "--output", choices=("json", "yaml"), help="the GameServer itself")
    p.set_defaults(fn=entry(cmd_status))

    from . import console  # rcon, console (issue 28)
    console.add_commands(sub, entry, _ns_flags)


def add_backup_create(bsub: argparse._SubParsersAction) -> None:
    """`backup create NAME` beside `backup download NAME` (`backup NAME` is short for it)."""
    p = bsub.add_parser("create", help="take a backup of a server now (`backup NAME` for short)")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    _timeout(p)
    p.set_defaults(fn=entry(cmd_backup_create))


