"""`peon`: the user's commands."""
from __future__ import annotations

import argparse
import json
import sys

import yaml


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peon", description="Peon's commands for game-server users.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="turn a PEON REST payload (JSON) into GameServer YAML")
    c.add_argument("payload", help="the payload file, or - for standard input")
    c.add_argument("-n", "--namespace", help="put the objects in this namespace")
    c.add_argument("--secret-env", action="store_true",
                   help="put env settings in a Secret of their own, named by secretRef")
    c.set_defaults(fn=cmd_convert)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
