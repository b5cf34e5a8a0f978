"""kubectl's command-line habits that argparse does not know: pure."""
from __future__ import annotations

from typing import Sequence


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


