"""Times, sizes and tables as kubectl prints them: pure, for `kubectl peon`'s output."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable, Mapping, Sequence

import yaml

from peon.shared import clock

NONE = "<none>"


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


def one_line(text: Any) -> str:
    return " ".join(str(text or "").split())
