"""The tools Peon's Jobs and init steps run in pods, from the operator's image: `peon archive
create|restore|delete` (a world into a local archive and back) and `peon store
backup|restore|export|seed|forget|list` (off-site, through restic). Each prints one JSON line and
writes it to the container's termination message, where the operator reads what it needs.

The same `peon` command a user types (peon/commands.py routes the first word here), so a
downloaded backup restores anywhere with `peon archive restore FILE DIR`."""
from __future__ import annotations

import argparse
import json
import os
import sys

from peon import __version__

def cmd_archive(args) -> int:
    """Run by backup and restore Jobs. Prints one JSON line and writes it to the container's
    termination message, where the operator reads size and sha256."""
    from peon.jobs import archive
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
    from peon.jobs import archive, store
    try:
        if args.action == "list":
            return _list(store.list_snapshots(args.host, create=args.create))
        if args.action == "backup":
            line = store.backup(args.source, args.host, args.name, args.reason, args.game,
                                args.image).json()
        elif args.action == "restore":
            line = store.restore(args.snapshot, args.path, args.target, args.size).json()
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


def _list(listing: dict) -> int:
    """A listing can be far longer than a termination message (4096 bytes): it goes to stdout
    as one line, which the operator reads from the pod's log, and the termination message says
    how long that line is and its SHA-256, so a log cut short or mixed is never taken for it."""
    import hashlib
    line = json.dumps(listing, separators=(",", ":"))
    print(line, flush=True)
    _termination_message(json.dumps({
        "count": len(listing["snapshots"]), "bytes": len(line.encode()),
        "sha256": hashlib.sha256(line.encode()).hexdigest()}))
    return 0


def _termination_message(text: str) -> None:
    path = "/dev/termination-log"
    if os.path.exists(path) and os.access(path, os.W_OK):
        with open(path, "w") as f:
            f.write(text)


def build_parser(prog: str = "peon") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="The tools Peon's Jobs run (archive, store).")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
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
    s = sub.add_parser("store", help="back a world up to an S3 store, restore it, or forget a "
                       "snapshot (Jobs run this; restic, with RESTIC_REPOSITORY, RESTIC_PASSWORD "
                       "and the AWS_* keys in the environment)")
    ssub = s.add_subparsers(dest="action", required=True)
    sb = ssub.add_parser("backup", help="snapshot SOURCE_DIR into the repository")
    sb.add_argument("source")
    sb.add_argument("--host", required=True, help="the server, as namespace/name")
    sb.add_argument("--name", required=True, help="the GameServerBackup's name (a tag)")
    sb.add_argument("--reason", help="why the backup was taken (a tag a listing reads back)")
    sb.add_argument("--game", help="the server's Game (a tag a listing reads back)")
    sb.add_argument("--image", help="the image that wrote the world (a tag a listing reads back)")
    sl = ssub.add_parser("list", help="the server's snapshots, newest first, as one JSON line "
                         "(the termination message holds its length and SHA-256)")
    sl.add_argument("--host", required=True, help="the server, as namespace/name")
    sl.add_argument("--create", action="store_true", help="create the repository when it is "
                    "not there (it then holds no snapshot), ahead of the server's first backup")
    sr = ssub.add_parser("restore", help="verify, then replace TARGET_DIR's contents with PATH "
                         "as the snapshot holds it")
    sr.add_argument("snapshot")
    sr.add_argument("path", help="the folder inside the snapshot (the world's, /data)")
    sr.add_argument("target")
    sr.add_argument("--size", type=int, help="the world's size in bytes as the backup recorded "
                    "it, for the space check (without it restic's stats reads it: a second "
                    "longer)")
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
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
