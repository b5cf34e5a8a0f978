"""`peon`'s own commands (beside kubectl peon's): PEON's payloads and plans, and a backup
downloaded to this machine."""
from __future__ import annotations

import json
import sys

import yaml

from .context import current_namespace


def cmd_convert(args) -> int:
    from peon.shared.convert import PayloadError, convert
    try:
        with (sys.stdin if args.payload == "-" else open(args.payload)) as f:
            payload = json.load(f)
        game = None
        if getattr(args, "game", None):
            with open(args.game) as f:
                game = yaml.safe_load(f)
            if not isinstance(game, dict) or game.get("kind") != "Game":
                raise PayloadError(f"{args.game}: not a Game (kind: Game)")
        docs = convert(payload, namespace=args.namespace, secret_env=args.secret_env, game=game)
    except (OSError, json.JSONDecodeError, yaml.YAMLError, PayloadError) as e:
        print(f"peon convert: {e}", file=sys.stderr)
        return 2
    given = {str(s.get("name") or "").strip() for s in payload.get("settings") or []
             if isinstance(s, dict) and s.get("type") in ("json", "txt")}
    for s in docs[-1]["spec"].get("settings") or []:
        if s["type"] != "env" and s["name"] not in given and "path" not in s:
            print(f"peon convert: a file setting is written as {s['name']} (its name in the "
                  "payload is not a plain file name); give --game GAME.yaml to keep PEON's name "
                  "through path", file=sys.stderr)
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


def cmd_backup(args) -> int:
    """`peon backup download`: one backup into a local file, checked against its checksum."""
    from peon.shared import download
    from peon.shared.kube import Kube
    out = args.output or f"{args.name}.tar.gz"
    try:
        got = download.download(Kube(agent="peon"), args.namespace or current_namespace(), args.name, out,
                                args.image, log=lambda m: print(f"peon backup download: {m}",
                                                                file=sys.stderr))
    except download.DownloadError as e:
        print(f"peon backup download: {e}", file=sys.stderr)
        return 1
    print(f"{got.path}: {got.size} bytes, sha256 {got.sha256} (restore it with "
          f"`peon archive restore {got.path} DIR`)")
    return 0
