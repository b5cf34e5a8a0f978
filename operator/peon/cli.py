"""`peon`: the user's commands."""
from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

from . import __version__


def cmd_convert(args) -> int:
    from .convert import PayloadError, convert
    try:
        with (sys.stdin if args.payload == "-" else open(args.payload)) as f:
            payload = json.load(f)
        docs = convert(payload, namespace=args.namespace, secret_env=args.secret_env)
    except (OSError, json.JSONDecodeError, PayloadError) as e:
        print(f"peon convert: {e}", file=sys.stderr)
        return 2
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False, allow_unicode=True)
    return 0


def cmd_plan_convert(args) -> int:
    """PEON's plan.json as a Peon Game (YAML), to review, verify and add to the catalogue."""
    from .plan import PlanError, convert_plan
    try:
        with (sys.stdin if args.plan == "-" else open(args.plan)) as f:
            plan = json.load(f)
        game = convert_plan(plan, args.uid)
    except (OSError, json.JSONDecodeError, PlanError) as e:
        print(f"peon plan convert: {e}", file=sys.stderr)
        return 2
    about = " ".join(str((plan.get("metadata") or {}).get("description") or "").split())
    print(f"# Converted by `peon plan convert` from PEON's plan {args.plan}"
          + (f" ({about})" if about else "") + ".\n# Check the image's ports, paths and "
          "variables against its documentation, then set spec.source to that page.")
    yaml.safe_dump(game, sys.stdout, sort_keys=False, allow_unicode=True)
    return 0


def cmd_archive(args) -> int:
    """Run by backup and restore Jobs. Prints one JSON line and writes it to the container's
    termination message, where the operator reads size and sha256."""
    from . import archive
    try:
        if args.action == "create":
            result = archive.create(args.source, args.archive)
        elif args.action == "restore":
            result = archive.restore(args.archive, args.target, args.sha256)
        else:
            result = {"archive": args.archive, "deleted": archive.delete(args.archive)}
    except (archive.ArchiveError, OSError) as e:  # an I/O error too: a message, not a traceback
        print(f"peon archive {args.action}: {e}", file=sys.stderr)
        _termination_message(json.dumps({"error": str(e)}))
        return 1
    for w in getattr(result, "warnings", []):  # all of them here; the JSON holds the first few
        print(f"peon archive {args.action}: warning: {w}", file=sys.stderr)
    line = result.json() if hasattr(result, "json") else json.dumps(result)
    print(line)
    _termination_message(line)
    return 0


def cmd_store(args) -> int:
    """Run by store Jobs (off-site backups through restic). One JSON line out, as archive."""
    from . import archive, store
    try:
        if args.action == "backup":
            line = store.backup(args.source, args.host, args.name).json()
        elif args.action == "restore":
            line = store.restore(args.snapshot, args.path, args.target).json()
        elif args.action == "export":
            line = store.export(args.snapshot, args.path, args.archive).json()
        elif args.action == "seed":
            line = json.dumps(store.seed(args.snapshot, args.target, args.host))
        else:
            line = json.dumps(store.forget(args.snapshot))
    except (store.StoreError, archive.ArchiveError, OSError) as e:
        print(f"peon store {args.action}: {e}", file=sys.stderr)
        _termination_message(json.dumps({"error": str(e)}))
        return 1
    print(line)
    _termination_message(line)
    return 0


def cmd_backup(args) -> int:
    """`peon backup download`: one backup into a local file, checked against its checksum."""
    from . import download
    from .kube import Kube
    out = args.output or f"{args.name}.tar.gz"
    try:
        got = download.download(Kube(agent="peon"), args.namespace or _current_namespace(), args.name, out,
                                args.image, log=lambda m: print(f"peon backup download: {m}",
                                                                file=sys.stderr))
    except download.DownloadError as e:
        print(f"peon backup download: {e}", file=sys.stderr)
        return 1
    print(f"{got.path}: {got.size} bytes, sha256 {got.sha256} (restore it with "
          f"`peon archive restore {got.path} DIR`)")
    return 0


def _current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl takes it."""
    import kubernetes
    try:
        _, ctx = kubernetes.config.list_kube_config_contexts()
        return (ctx.get("context") or {}).get("namespace") or "default"
    except (kubernetes.config.ConfigException, OSError, TypeError):
        return "default"


def _termination_message(text: str) -> None:
    path = "/dev/termination-log"
    if os.path.exists(path) and os.access(path, os.W_OK):
        with open(path, "w") as f:
            f.write(text)


def build_parser(prog: str = "peon") -> argparse.ArgumentParser:
    from . import kubectl_peon
    ap = argparse.ArgumentParser(prog=prog, description="Peon's commands for game-server users.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="turn a PEON REST payload (JSON) into GameServer YAML")
    c.add_argument("payload", help="the payload file, or - for standard input")
    c.add_argument("-n", "--namespace", help="put the objects in this namespace")
    c.add_argument("--secret-env", action="store_true",
                   help="put env settings in a Secret of their own, named by secretRef")
    c.set_defaults(fn=cmd_convert)
    pl = sub.add_parser("plan", help="PEON's game plans (plan.json)")
    plsub = pl.add_subparsers(dest="action", required=True)
    plc = plsub.add_parser("convert", help="turn a PEON plan.json into Game YAML")
    plc.add_argument("plan", help="the plan.json file, or - for standard input")
    plc.add_argument("--uid", help="the Game's name (default: the plan's game_uid)")
    plc.set_defaults(fn=cmd_plan_convert)
    a = sub.add_parser("archive", help="archive a world, restore it, or delete an archive (Jobs run this)")
    asub = a.add_subparsers(dest="action", required=True)
    ac = asub.add_parser("create", help="archive SOURCE_DIR into ARCHIVE")
    ac.add_argument("source")
    ac.add_argument("archive")
    ar = asub.add_parser("restore", help="verify ARCHIVE, then replace TARGET_DIR's contents with it")
    ar.add_argument("archive")
    ar.add_argument("target")
    ar.add_argument("--sha256", help="the checksum the archive must have")
    ad = asub.add_parser("delete", help="remove ARCHIVE and its checksum file")
    ad.add_argument("archive")
    a.set_defaults(fn=cmd_archive)
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
    s = sub.add_parser("store", help="back a world up to an S3 store, restore it, or forget a "
                       "snapshot (Jobs run this; restic, with RESTIC_REPOSITORY, RESTIC_PASSWORD "
                       "and the AWS_* keys in the environment)")
    ssub = s.add_subparsers(dest="action", required=True)
    sb = ssub.add_parser("backup", help="snapshot SOURCE_DIR into the repository")
    sb.add_argument("source")
    sb.add_argument("--host", required=True, help="the server, as namespace/name")
    sb.add_argument("--name", required=True, help="the GameServerBackup's name (a tag)")
    sr = ssub.add_parser("restore", help="verify, then replace TARGET_DIR's contents with PATH "
                         "as the snapshot holds it")
    sr.add_argument("snapshot")
    sr.add_argument("path", help="the folder inside the snapshot (the world's, /data)")
    sr.add_argument("target")
    se = ssub.add_parser("export", help="write PATH as the snapshot holds it into ARCHIVE, "
                         "a Peon archive (for a download)")
    se.add_argument("snapshot")
    se.add_argument("path", help="the folder inside the snapshot (the world's, /data)")
    se.add_argument("archive")
    sd = ssub.add_parser("seed", help="restore SNAPSHOT (or the host's latest) into TARGET_DIR "
                         "when it holds no world; a world with data is kept (a game pod's init step)")
    sd.add_argument("snapshot", help='"latest" or a snapshot id')
    sd.add_argument("target")
    sd.add_argument("--host", required=True, help="the server, as namespace/name")
    sf = ssub.add_parser("forget", help="remove a snapshot and the data only it used")
    sf.add_argument("snapshot")
    s.set_defaults(fn=cmd_store)
    return ap


def main(argv: list[str] | None = None, prog: str = "peon") -> int:
    from .kubectl_peon import normalize_argv
    args = build_parser(prog).parse_args(normalize_argv(sys.argv[1:] if argv is None else argv))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
