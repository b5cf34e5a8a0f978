"""`kubectl peon` (the `kubectl-peon` plugin; the same commands under `peon`): a person's view
of their servers and the verbs PEON had, from a terminal.

Every write here is one of actions.py's: annotations on a GameServer's metadata (a JSON merge
patch that names nothing but metadata), or a GameServerBackup or GameServerRestore object of
its own. Nothing here writes a GameServer's spec, so a server kept in Git shows no drift.

Pure parts first (tables, ages, rows, the status text, argument shortcuts), then the commands,
which take a Ctx (the API, the clock, the output) so the tests drive them through FakeKube.

Exit codes, as scripts want them: 0 done, 1 the cluster said no or a wait failed, 2 bad usage.
"""
from __future__ import annotations

import argparse
import codecs
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

import yaml

from . import LABEL_GAMESERVER, backup as bk, clock

# actions (and what it imports: the model, the kubernetes client) is imported where it is
# used, so `peon archive` in a backup Job starts as fast as it did.

PROG = "kubectl peon"
FIELD_MANAGER = "kubectl-peon"
SERVER_CONTAINER = bk.SERVER_CONTAINER
NONE = "<none>"
EVENTS_SHOWN = 10
POLL_SECONDS = 1.0


class Usage(Exception):
    """Bad usage that argparse cannot see (exit 2)."""


class Failure(Exception):
    """What the cluster said no to, or a wait that failed (exit 1)."""


# --- pure: times, sizes, tables -------------------------------------------------------------------

def human_duration(d: dt.timedelta) -> str:
    """A duration as kubectl prints ages (apimachinery's duration.HumanDuration)."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def age(since: str | dt.datetime | None, now: dt.datetime) -> str:
    """How long ago `since` was (an RFC 3339 time or a datetime), as kubectl's AGE column."""
    t = clock.parse(since) if isinstance(since, str) or since is None else since
    return "<unknown>" if t is None else human_duration(now - t)


def until(when: dt.datetime, now: dt.datetime) -> str:
    """`when` and how far it is from now: '2026-11-29T23:00:00Z (in 5h)' or '(3m ago)'."""
    rel = f"in {human_duration(when - now)}" if when > now else f"{human_duration(now - when)} ago"
    return f"{clock.iso(when)} ({rel})"


def human_size(n: Any) -> str:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return NONE
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n}B" if unit == "B" else f"{size:.1f}{unit}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """Aligned columns as kubectl prints them (a tabwriter: cells at least 10 wide, 3 spaces
    of padding; the last column is not padded). Empty cells read <none>."""
    cells = [[str(h) for h in headers]] + [[NONE if c in (None, "") else str(c) for c in r]
                                           for r in rows]
    widths = [max(max(len(r[i]) for r in cells) + 3, 10) for i in range(len(headers))]
    lines = []
    for r in cells:
        line = "".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + r[-1]
        lines.append(indent + line.rstrip())
    return "\n".join(lines) + "\n"


def without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def dump(objs: Any, fmt: str, single: bool = False) -> str:
    """-o json|yaml: one object, or a v1 List of them (as kubectl prints several)."""
    if single:
        doc = without_managed_fields(objs)
    else:
        doc = {"apiVersion": "v1", "kind": "List",
               "items": [without_managed_fields(o) for o in objs], "metadata": {"resourceVersion": ""}}
    if fmt == "json":
        return json.dumps(doc, indent=4) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# --- pure: what the columns say ---------------------------------------------------------------------

def players(status: Mapping[str, Any]) -> str:
    p = status.get("players") or {}
    online, most = p.get("online"), p.get("max")
    if online is None:
        return NONE
    return f"{online}/{most}" if most is not None else str(online)


def why(status: Mapping[str, Any]) -> str:
    return (status.get("uptime") or {}).get("reason") or NONE


def backups_by_server(backups: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for b in backups:
        server = (b.get("spec") or {}).get("gameServer")
        if server:
            out.setdefault((b["metadata"].get("namespace", ""), server), []).append(b)
    return out


def last_backup_time(gs: Mapping[str, Any], backups: Iterable[Mapping[str, Any]] | None
                     ) -> dt.datetime | None:
    """When the newest Succeeded GameServerBackup of this server finished. With no backups
    to look at (None: listing them was not allowed), what the server's status says."""
    from . import actions
    if backups is None:
        return clock.parse(((gs.get("status") or {}).get("backup") or {}).get("lastSuccessfulTime"))
    newest = actions.newest_good_backup(backups)
    return clock.parse(bk.finished_at(newest)[0]) if newest else None


LS_HEADERS = ("NAME", "GAME", "STATE", "PHASE", "ADDRESS", "PLAYERS", "WHY", "LAST-BACKUP", "AGE")


def ls_row(gs: Mapping[str, Any], backups: Iterable[Mapping[str, Any]] | None,
           now: dt.datetime) -> list[str]:
    """One `ls` line: the GameServer's own printer columns, plus its last good backup."""
    meta, spec, st = gs["metadata"], gs.get("spec") or {}, gs.get("status") or {}
    last = last_backup_time(gs, backups)
    return [meta["name"], spec.get("gameUid") or NONE, spec.get("state") or "Running",
            st.get("phase") or NONE, st.get("endpoint") or NONE, players(st), why(st),
            age(last, now) if last else NONE, age(meta.get("creationTimestamp"), now)]


def ls_table(servers: Sequence[Mapping[str, Any]], backups: Sequence[Mapping[str, Any]] | None,
             now: dt.datetime, all_namespaces: bool = False) -> str:
    by_server = backups_by_server(backups) if backups is not None else None
    rows = []
    for gs in sorted(servers, key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"])):
        key = (gs["metadata"].get("namespace", ""), gs["metadata"]["name"])
        row = ls_row(gs, by_server.get(key, []) if by_server is not None else None, now)
        rows.append(([key[0]] if all_namespaces else []) + row)
    return table((("NAMESPACE",) if all_namespaces else ()) + LS_HEADERS, rows)


BACKUP_HEADERS = ("NAME", "SERVER", "REASON", "PHASE", "SIZE", "AGE")


def backups_table(backups: Sequence[Mapping[str, Any]], now: dt.datetime,
                  all_namespaces: bool = False) -> str:
    """Oldest first, as they were taken."""
    rows = []
    for b in sorted(backups, key=lambda b: (b["metadata"].get("namespace", ""),
                                            b["metadata"].get("creationTimestamp", ""),
                                            b["metadata"]["name"])):
        meta, spec, st = b["metadata"], b.get("spec") or {}, b.get("status") or {}
        row = [meta["name"], spec.get("gameServer") or NONE, spec.get("reason") or NONE,
               st.get("phase") or NONE, human_size(st.get("size")),
               age(meta.get("creationTimestamp"), now)]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + row)
    return table((("NAMESPACE",) if all_namespaces else ()) + BACKUP_HEADERS, rows)


def event_time(e: Mapping[str, Any]) -> str:
    return (e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
            or (e.get("metadata") or {}).get("creationTimestamp") or "")


def events_of(events: Iterable[Mapping[str, Any]], gs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The GameServer's Events (this object, not an earlier one of the same name), oldest
    first, the last EVENTS_SHOWN of them."""
    meta = gs["metadata"]
    mine = []
    for e in events:
        inv = e.get("involvedObject") or e.get("regarding") or {}
        if inv.get("kind") != "GameServer" or inv.get("name") != meta["name"]:
            continue
        if meta.get("uid") and inv.get("uid") and inv["uid"] != meta["uid"]:
            continue
        mine.append(e)
    mine.sort(key=lambda e: (clock.parse(event_time(e)) or dt.datetime.min.replace(tzinfo=dt.timezone.utc)))
    return mine[-EVENTS_SHOWN:]


def event_age(e: Mapping[str, Any], now: dt.datetime) -> str:
    """'3m', or as describe says a repeated one: '3m (x4 over 20m)'."""
    last = age(event_time(e), now)
    count = e.get("count") or (e.get("series") or {}).get("count") or 1
    first = e.get("firstTimestamp") or e.get("eventTime")
    if count > 1 and first:
        return f"{last} (x{count} over {age(first, now)})"
    return last


def one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


STATUS_LABEL_WIDTH = 15  # "Next change:" and its value, as describe lines them up


def status_text(gs: Mapping[str, Any], events: Iterable[Mapping[str, Any]], now: dt.datetime) -> str:
    """`status NAME`: what `kubectl describe` would say of it, in the words players care for."""
    from . import actions
    meta, spec, st = gs["metadata"], gs.get("spec") or {}, gs.get("status") or {}
    up = st.get("uptime") or {}
    fields: list[tuple[str, str]] = [
        ("Name", meta["name"]), ("Namespace", meta.get("namespace", "")),
        ("Game", spec.get("gameUid") or NONE), ("State", spec.get("state") or "Running"),
        ("Phase", st.get("phase") or NONE)]
    reason = up.get("reason")
    fields.append(("Why", f"{reason}: {one_line(up['message'])}" if reason and up.get("message")
                   else reason or NONE))
    stop = actions.scheduled_stop(gs, now)
    if stop:
        fields.append(("Stops", until(stop, now)))
    nxt = clock.parse(up.get("nextChange"))
    if nxt and nxt != stop:
        fields.append(("Next change", until(nxt, now)))
    fields.append(("Address", st.get("endpoint") or NONE))
    for i, ep in enumerate(st.get("endpoints") or []):
        fields.append(("Endpoints" if i == 0 else "",
                       f"{ep.get('name', '?')} {ep.get('address', '?')}:{ep.get('port', '?')}"
                       f"/{ep.get('protocol', '?')}"))
    pl = players(st)
    seen = (st.get("players") or {}).get("lastSeen")
    fields.append(("Players", pl + (f" (a player last seen {age(seen, now)} ago)" if seen else "")))
    last = st.get("backup") or {}
    if last.get("lastSuccessful"):
        fields.append(("Last backup", f"{last['lastSuccessful']}" + (
            f" ({age(last['lastSuccessfulTime'], now)} ago)" if last.get("lastSuccessfulTime") else "")))
    if last.get("lastOffsite"):  # the loss window: what a lost node would take with it
        fields.append(("Off-site", f"{last['lastOffsite']}" + (
            f" ({age(last['lastOffsiteTime'], now)} ago)" if last.get("lastOffsiteTime") else "")
            + ("; OVERDUE: older than the schedule promised" if last.get("offsiteOverdue") else "")))
    elif last.get("offsiteOverdue"):
        fields.append(("Off-site", "none yet; OVERDUE: the schedule promised one"))
    seed = st.get("seed") or {}
    if seed.get("snapshot"):  # a world that came back from the store, and how old it was
        taken, seeded = clock.parse(seed.get("snapshotTime")), clock.parse(seed.get("seededAt"))
        fields.append(("Seeded", f"from snapshot {seed['snapshot'][:8]}" + (
            f", taken {age(taken, seeded)} before it was seeded" if taken and seeded else "")))
    if last.get("nextScheduleTime") and clock.parse(last["nextScheduleTime"]):
        fields.append(("Next backup", until(clock.parse(last["nextScheduleTime"]), now)))
    if st.get("image"):
        fields.append(("Image", st["image"]))
    fields.append(("Age", age(meta.get("creationTimestamp"), now)))
    observed, generation = st.get("observedGeneration"), meta.get("generation")
    if observed is not None and generation is not None and observed != generation:
        fields.append(("Note", f"this status is for generation {observed}; the spec is at "
                               f"{generation} (the operator has not caught up yet)"))
    width = max(STATUS_LABEL_WIDTH, max(len(k) for k, _ in fields) + 3)
    out = [(f"{k}:" if k else "").ljust(width) + v for k, v in fields]
    conditions = st.get("conditions") or []
    if conditions:
        out.append("Conditions:")
        out.append(table(("TYPE", "STATUS", "REASON", "MESSAGE"),
                         [(c.get("type"), c.get("status"), c.get("reason"), one_line(c.get("message")))
                          for c in conditions], indent="  ").rstrip("\n"))
    else:
        out.append("Conditions:".ljust(width) + NONE)
    evs = events_of(events, gs)
    if evs:
        out.append("Events:")
        out.append(table(("TYPE", "REASON", "AGE", "MESSAGE"),
                         [(e.get("type"), e.get("reason"), event_age(e, now), one_line(e.get("message")))
                          for e in evs], indent="  ").rstrip("\n"))
    else:
        out.append("Events:".ljust(width) + NONE)
    return "\n".join(out) + "\n"


# --- pure: decisions ------------------------------------------------------------------------------

def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """A point in time: PEON's ten-digit Unix time, or an RFC 3339 time; in the future."""
    from . import actions
    if actions.EPOCH.match(str(text)):
        return actions.parse_epoch(text, now)
    at = clock.parse(text)
    if at is None:
        raise actions.BadRequest(f"{text!r} is neither ten digits of Unix time nor an RFC 3339 "
                                 "time such as 2026-11-29T23:00:00Z")
    if at <= now:
        raise actions.BadRequest(f"{text} ({clock.iso(at)}) is not in the future")
    return at


def start_refusal(gs: Mapping[str, Any]) -> str | None:
    """Why a start cannot run the server, or None. spec.state Stopped wins over any wake-up,
    and kubectl peon never writes spec."""
    if (gs.get("spec") or {}).get("state") == "Stopped":
        name = gs["metadata"]["name"]
        return (f"gameserver/{name} has spec.state: Stopped, which wins over a start: it will not "
                f"run until its spec says Running (kubectl peon never writes spec; change it "
                f"where the spec lives, e.g. in Git, or `kubectl patch pgs {name} --type merge "
                "-p '{\"spec\":{\"state\":\"Running\"}}'`)")
    return None


def run_outcome(obj: Mapping[str, Any] | None) -> tuple[bool, bool, str]:
    """(finished, succeeded, what it said) for a GameServerBackup or GameServerRestore."""
    st = (obj or {}).get("status") or {}
    phase = st.get("phase")
    return phase in bk.FINISHED, phase == bk.SUCCEEDED, one_line(st.get("message"))


def is_server_pod(pod: Mapping[str, Any], name: str) -> bool:
    """The server's own pod: labelled with it, and not a backup, restore or download pod
    (cache._server_pod's rule) nor any Job's."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_GAMESERVER) != name:
        return False
    if any(k in labels for k in (bk.LABEL_BACKUP, bk.LABEL_RESTORE, bk.LABEL_DOWNLOAD)):
        return False
    return not any(o.get("kind") == "Job" for o in meta.get("ownerReferences") or [])


def server_pod(pods: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The pod to read logs from: a server pod, one not going away first, then a running one,
    then the newest."""
    mine = [p for p in pods if is_server_pod(p, name)]
    return max(mine, default=None, key=lambda p: (
        not p["metadata"].get("deletionTimestamp"),
        (p.get("status") or {}).get("phase") == "Running",
        p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))


# --- pure: the command line ---------------------------------------------------------------------------

GLOBAL_FLAGS_WITH_VALUE = ("-n", "--namespace")
GLOBAL_FLAGS = ("-A", "--all-namespaces")
BACKUP_ACTIONS = ("create", "download")
BACKUP_VALUE_FLAGS = ("-n", "--namespace", "-o", "--output", "--image", "--timeout")


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Two kubectl habits argparse does not know. `-n NS`/`-A` before the command (`kubectl peon
    -n games ls`) go after it. `backup NAME` is `backup create NAME` (`backup download NAME`
    stays what it was; a server called create or download needs the long form)."""
    args, moved, i = list(argv), [], 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-h", "--help", "--version"):
        a = args[i]
        if a in GLOBAL_FLAGS_WITH_VALUE and i + 1 < len(args):
            moved += args[i:i + 2]
            i += 2
        elif a in GLOBAL_FLAGS or a.startswith("--namespace=") or (a.startswith("-n") and len(a) > 2):
            moved.append(a)
            i += 1
        else:
            break
    args = args[i:] + moved if moved and i < len(args) else args
    if args and args[0] == "backup" and len(args) > 1:
        j = 1
        while j < len(args):
            a = args[j]
            if a in ("-h", "--help"):
                return args
            if a in BACKUP_VALUE_FLAGS:
                j += 2
            elif a.startswith("-"):
                j += 1
            else:
                break
        if j >= len(args) or args[j] not in BACKUP_ACTIONS:
            args.insert(1, "create")
    return args


# --- I/O: the context the commands run in -------------------------------------------------------

@dataclass
class Ctx:
    kube: Any
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    now: Callable[[], dt.datetime] = clock.now  # the operator's clock (PEON_CLOCK_FILE in tests)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    default_namespace: Callable[[], str] = lambda: _current_namespace()
    # (namespace, pod, container, follow, tail, previous) -> chunks of the log
    pod_logs: Callable[..., Iterable[bytes]] | None = None

    def print(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()


def _current_namespace() -> str:
    from .cli import _current_namespace as current
    return current()


def make_kube(api_client: Any = None):
    """The API as this command's user (their kubeconfig), writing as `kubectl-peon`."""
    from .kube import Kube
    return Kube(api_client, agent=FIELD_MANAGER)


def live_pod_logs(api_client: Any) -> Callable[..., Iterable[bytes]]:
    def read(namespace: str, pod: str, container: str, follow: bool, tail: int | None,
             previous: bool) -> Iterable[bytes]:
        from kubernetes.client import CoreV1Api
        kw: dict[str, Any] = {"container": container, "follow": follow, "previous": previous,
                              "_preload_content": False}
        if tail is not None and tail >= 0:
            kw["tail_lines"] = tail
        resp = CoreV1Api(api_client).read_namespaced_pod_log(pod, namespace, **kw)
        try:
            yield from resp.stream(64 * 1024)  # as the kubelet sends it (chunked), not held back
        finally:
            resp.release_conn()
    return read


def live_ctx() -> Ctx:
    kube = make_kube()
    return Ctx(kube=kube, pod_logs=live_pod_logs(kube.api))


def _api_message(e: Any) -> str:
    try:
        msg = json.loads(e.body or "{}").get("message")
    except (ValueError, AttributeError, TypeError):
        msg = None
    return msg or f"{e.status} {e.reason}".strip()


def _entry(command: Callable[[argparse.Namespace, Ctx], int]) -> Callable[..., int]:
    """The argparse fn: runs `command` with a live Ctx (or the one a test gives) and turns
    what goes wrong into `error: ...` on stderr and an exit code."""
    def run(args: argparse.Namespace, ctx: Ctx | None = None) -> int:
        from . import actions
        from kubernetes.client.rest import ApiException
        from kubernetes.config import ConfigException
        import urllib3
        err = ctx.err if ctx else sys.stderr
        try:
            ctx = ctx or live_ctx()
            return command(args, ctx)
        except (Usage, actions.BadRequest) as e:
            print(f"error: {e}", file=err)
            return 2
        except Failure as e:
            print(f"error: {e}", file=err)
            return 1
        except ApiException as e:
            print(f"error: {_api_message(e)}", file=err)
            return 1
        except ConfigException as e:
            print(f"error: no cluster to talk to: {e}", file=err)
            return 1
        except urllib3.exceptions.HTTPError as e:
            print(f"error: cannot reach the API server: {e}", file=err)
            return 1
        except BrokenPipeError:  # `kubectl peon logs x | head`
            return 0
        except KeyboardInterrupt:
            return 130
    run.__name__ = command.__name__
    run.takes_ctx = True  # type: ignore[attr-defined]
    return run


def _namespace(args: argparse.Namespace, ctx: Ctx) -> str | None:
    if getattr(args, "all_namespaces", False):
        return None
    return args.namespace or ctx.default_namespace()


def _get_server(ctx: Ctx, ns: str, name: str) -> dict:
    gs = ctx.kube.get("GameServer", ns, name)
    if gs is None:
        raise Failure(f'gameserver "{name}" not found in namespace "{ns}"')
    return gs


def _annotate(ctx: Ctx, gs: Mapping[str, Any], patch: dict[str, Any]) -> dict:
    # The one write a verb makes: metadata only, as a JSON merge patch. Never spec.
    if set(patch) != {"metadata"}:
        raise AssertionError(f"kubectl peon writes a GameServer's metadata only, not {sorted(patch)}")
    meta = gs["metadata"]
    return ctx.kube.merge_patch("GameServer", meta["namespace"], meta["name"], patch)


# --- the commands ------------------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace, ctx: Ctx) -> int:
    from kubernetes.client.rest import ApiException
    ns = _namespace(args, ctx)
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
    ns = _namespace(args, ctx)
    if args.name and ns is not None:
        _get_server(ctx, ns, args.name)
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
    from . import actions
    now = ctx.now()
    stop_at = None
    if getattr(args, "for_", None):
        stop_at = now + actions.parse_interval(args.for_)
    elif getattr(args, "until", None):
        stop_at = parse_when(args.until, now)
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
    refusal = start_refusal(gs)
    if refusal:
        raise Failure(refusal)
    _annotate(ctx, gs, actions.start_patch(now, stop_at))
    verb = "wake" if args.verb == "wake" else "start"
    ctx.print(f"gameserver/{args.name} {verb} requested"
              + (f" (until {clock.iso(stop_at)})" if stop_at else ""))
    return 0


def cmd_stop(args: argparse.Namespace, ctx: Ctx) -> int:
    from . import actions
    now = ctx.now()
    at = None
    if args.in_:
        at = now + actions.parse_interval(args.in_)
    elif args.at:
        at = parse_when(args.at, now)
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
    _annotate(ctx, gs, actions.stop_patch(at or now, now))
    ctx.print(f"gameserver/{args.name} stop requested ({f'at {clock.iso(at)}' if at else 'now'})")
    return 0


def cmd_restart(args: argparse.Namespace, ctx: Ctx) -> int:
    from . import actions
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
    now = ctx.now()
    _annotate(ctx, gs, actions.restart_patch(now))
    note = ""
    if (gs.get("status") or {}).get("phase") == "Stopped":
        note = " (it is stopped: it starts with a new pod when it runs again)"
    ctx.print(f"gameserver/{args.name} restart requested{note}")
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
    from . import actions
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
    made = ctx.kube.create(actions.manual_backup(gs, ctx.now()))
    name = made["metadata"]["name"]
    ctx.print(f"gameserverbackup/{name} created")
    return _wait_run(ctx, "GameServerBackup", ns, name, args.timeout) if args.wait else 0


def cmd_restore(args: argparse.Namespace, ctx: Ctx) -> int:
    from . import actions
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
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
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
    pod = server_pod(ctx.kube.list("Pod", ns, f"{LABEL_GAMESERVER}={args.name}"), args.name)
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
    ns = _namespace(args, ctx)
    gs = _get_server(ctx, ns, args.name)
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
    """The commands `kubectl peon` adds to `peon`'s (cli.py calls this)."""
    p = sub.add_parser("ls", help="list game servers: phase, address, players, why, last backup")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these servers")
    _ns_flags(p, all_namespaces=True)
    p.add_argument("-o", "--output", choices=("json", "yaml", "name"))
    p.set_defaults(fn=_entry(cmd_ls))

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
        p.set_defaults(fn=_entry(cmd_start), verb=verb)

    p = sub.add_parser("stop", help="stop a server now or later (the world is kept)")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--in", dest="in_", metavar="INTERVAL", help="stop after this long (20m, 2h)")
    g.add_argument("--at", metavar="TIME", help="stop at this time (ten-digit Unix time, or RFC 3339)")
    p.set_defaults(fn=_entry(cmd_stop))

    p = sub.add_parser("restart", help="give a server a new pod")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.set_defaults(fn=_entry(cmd_restart))

    p = sub.add_parser("backups", help="list backups (of one server, with NAME)")
    p.add_argument("name", nargs="?", help="only this GameServer's")
    _ns_flags(p, all_namespaces=True)
    p.add_argument("-o", "--output", choices=("json", "yaml", "name"))
    p.set_defaults(fn=_entry(cmd_backups))

    p = sub.add_parser("restore", help="restore a server's world from one of its backups")
    p.add_argument("name", help="the GameServer")
    p.add_argument("backup", help="the Succeeded GameServerBackup")
    _ns_flags(p)
    _timeout(p)
    p.set_defaults(fn=_entry(cmd_restore))

    p = sub.add_parser("logs", help="the server container's log")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows")
    p.add_argument("--tail", type=int, default=None, metavar="N",
                   help="only the last N lines (-1, the default: all)")
    p.add_argument("-p", "--previous", action="store_true",
                   help="the log of the container's previous run (after a crash)")
    p.set_defaults(fn=_entry(cmd_logs))

    p = sub.add_parser("status", help="phase, why, address, players, conditions and recent Events")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    p.add_argument("-o", "--output", choices=("json", "yaml"), help="the GameServer itself")
    p.set_defaults(fn=_entry(cmd_status))


def add_backup_create(bsub: argparse._SubParsersAction) -> None:
    """`backup create NAME` beside `backup download NAME` (`backup NAME` is short for it)."""
    p = bsub.add_parser("create", help="take a backup of a server now (`backup NAME` for short)")
    p.add_argument("name", help="the GameServer")
    _ns_flags(p)
    _timeout(p)
    p.set_defaults(fn=_entry(cmd_backup_create))


def run(argv: Sequence[str], ctx: Ctx) -> int:
    """Parse and run one command line in `ctx` (the tests' way in)."""
    from .cli import build_parser
    args = build_parser(PROG).parse_args(normalize_argv(argv))
    return args.fn(args, ctx) if getattr(args.fn, "takes_ctx", False) else args.fn(args)


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main
    return cli_main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
