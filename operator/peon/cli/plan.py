"""PEON's game plans (`plan.json`) as Peon Games: what `peon plan convert` prints.

A plan, as PEON's orchestrator reads it (the-peon-project/peon-warplans, peon-orc's plans.py):

    {"metadata": {"game_uid": "valheim", "image": "umlatt/steamcmd", "description": ...},
     "ports": [[{"PORT": ["2456", "udp"]}, {"QUERYPORT": ["2457", "udp"]}], [...]],
     "environment": {"STEAM_ID": "896660", "SERVER_NAME": null, "MAX_PLAYERS": "8"},
     "volumes": {"~!/data": "/home/steam/steamcmd/data", "~!/user": "/home/.../saves"},
     "files": {"~!/server.cfg": "/path/in/the/container/server.cfg"}}

- `ports` is a list of alternative port groups; PEON deploys group 0. A protocol is `udp`, `tcp`,
  or both (`tcp/udp`, `all`); PEON also passes each port to the server as a variable of its name.
- `environment`: null means required, anything else is a default; `STEAM_ID` is the app id.
- `volumes`: `~!` stands for the server's own folder on the host (older plans say `./`). Among
  them `user` is where the game keeps its saves, else `data` (PEON's steamcmd install).
- Older plans spelled `game_id` for `game_uid`, lists of one-key objects for the maps, and
  `{"key": ..., "type"/"value"/"path": ...}` records; all are read.

`convert_plan` is pure: a dict in, a Game object out, or a `PlanError` that names the field.
"""
from __future__ import annotations

import re
from typing import Any

UID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET = re.compile(r"PASS|TOKEN|GSLT|SECRET", re.I)
PROTOCOLS = {"udp": ("UDP",), "tcp": ("TCP",), "tcp/udp": ("UDP", "TCP"),
             "udp/tcp": ("UDP", "TCP"), "all": ("UDP", "TCP")}
SAVE_VOLUMES = ("user", "data")   # PEON's save folder first, then its install folder
PEON_USER = 1000                  # PEON ran every server as 1000:1000


class PlanError(ValueError):
    """A plan Peon cannot turn into a Game; the message names the field."""


def convert_plan(plan: dict, uid: str | None = None) -> dict[str, Any]:
    """The Game for a PEON plan. `uid` overrides the plan's own game uid (PEON's ark plan says
    valheim; its Sons of the Forest plan says sonsoftheforest where the catalogue says sof)."""
    if not isinstance(plan, dict):
        raise PlanError(f"plan: expected a JSON object, not {type(plan).__name__}")
    meta = plan.get("metadata")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise PlanError("metadata: expected an object")
    uid = uid or meta.get("game_uid") or meta.get("game_id")
    if not isinstance(uid, str) or not UID.match(uid) or len(uid) > 63:
        raise PlanError(f"metadata.game_uid: {uid!r} is not a game uid (lowercase letters, digits "
                        "and '-'; give --uid)")
    image = meta.get("image")
    if not isinstance(image, str) or not image.strip():
        raise PlanError("metadata.image: the plan names no image")

    ports = _ports(plan.get("ports"))
    env, steam_id = _env(plan.get("environment"))
    names = {e["name"] for e in env}
    for peon_name, port, _ in ports:     # PEON passes each port as a variable of its name
        if peon_name not in names and ENV_NAME.match(peon_name):
            env.append({"name": peon_name, "default": str(port)})
            names.add(peon_name)
    data_path = _data_path(plan.get("volumes"))

    spec: dict[str, Any] = {"title": str(meta.get("title") or plan.get("title") or uid)}
    if steam_id is not None:
        spec["steamAppId"] = steam_id
    spec["image"] = image.strip()
    named = _named(ports)
    spec["ports"] = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in named]
    if env:
        spec["env"] = env
    spec["dataPath"] = data_path
    files = _files(plan.get("files"), data_path)
    if files:
        spec["files"] = files
    spec["securityContext"] = {"runAsUser": PEON_USER, "runAsGroup": PEON_USER,
                               "fsGroup": PEON_USER}
    query = next((n for (peon, _, proto), (n, _, _) in zip(ports, named)
                  if proto == "UDP" and re.search("QUERY|A2S", peon, re.I)), None)
    spec["query"] = {"protocol": "a2s", "port": query} if query else {"protocol": "none"}
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "Game", "metadata": {"name": uid},
            "spec": spec}


def _pairs(value: Any, field: str, key_field: str = "value") -> list[tuple[str, Any]]:
    """(key, value) pairs from a map, a list of one-key maps, or a list of {key, <key_field>}."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if not isinstance(value, list):
        raise PlanError(f"{field}: expected an object or a list, not {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and "key" in item:
            out.append((str(item["key"]), item.get(key_field)))
        elif isinstance(item, dict) and len(item) == 1:
            out.extend((str(k), v) for k, v in item.items())
        else:
            raise PlanError(f"{field}[{i}]: expected a one-key object or a {{key, {key_field}}} "
                            "record")
    return out


def _ports(groups: Any) -> list[tuple[str, int, str]]:
    """Group 0 as (PEON name, port, protocol), one entry per protocol."""
    if not isinstance(groups, list) or not groups or not groups[0]:
        raise PlanError("ports: the plan has no ports (ports[0] must list at least one)")
    group = groups[0]
    if not isinstance(group, list):
        raise PlanError("ports[0]: expected a list of ports")
    out: list[tuple[str, int, str]] = []
    for i, entry in enumerate(group):
        if isinstance(entry, dict) and "key" in entry:      # {"key", "type", "value"}
            name, number, proto = entry["key"], entry.get("value"), entry.get("type")
        elif isinstance(entry, dict) and len(entry) == 1:   # {"NAME": [port, protocol]}
            (name, value), = entry.items()
            if not isinstance(value, list) or len(value) != 2:
                raise PlanError(f"ports[0][{i}].{name}: expected [port, protocol]")
            number, proto = value
        else:
            raise PlanError(f"ports[0][{i}]: expected {{NAME: [port, protocol]}}")
        where = f"ports[0][{i}].{name}"
        try:
            port = int(str(number).strip())
        except ValueError:
            raise PlanError(f"{where}: {number!r} is not a port number") from None
        if not 1 <= port <= 65535:
            raise PlanError(f"{where}: port {port} is out of range 1-65535")
        protos = PROTOCOLS.get(str(proto).strip().lower())
        if protos is None:
            raise PlanError(f"{where}: unknown protocol {proto!r} (udp, tcp, tcp/udp or all)")
        for p in protos:
            if (port, p) not in {(q, r) for _, q, r in out}:
                out.append((str(name), port, p))
    return out


def _named(ports: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """Kubernetes port names (lowercase, at most 15 characters, unique), TCP twins as -tcp."""
    used: set[str] = set()
    both = {port for _, port, proto in ports if proto == "UDP"} & \
        {port for _, port, proto in ports if proto == "TCP"}
    out = []
    for peon, port, proto in ports:
        base = re.sub(r"[^a-z0-9]+", "-", peon.lower()).strip("-") or "port"
        suffix = "-tcp" if proto == "TCP" and port in both else ""
        name = _fit(base, suffix)
        n = 2
        while name in used:
            name = _fit(base, f"{suffix}-{n}")
            n += 1
        used.add(name)
        out.append((name, port, proto))
    return out


def _fit(base: str, suffix: str) -> str:
    return (base[:15 - len(suffix)].rstrip("-") or "p") + suffix


def _env(value: Any) -> tuple[list[dict[str, Any]], int | None]:
    env: list[dict[str, Any]] = []
    steam_id = None
    for key, val in _pairs(value, "environment"):
        if not ENV_NAME.match(key):
            raise PlanError(f"environment.{key}: not a valid variable name")
        if key in {e["name"] for e in env}:
            raise PlanError(f"environment.{key}: given twice")
        if key == "STEAM_ID" and val is not None and str(val).strip().isdigit():
            steam_id = int(str(val).strip())
        if isinstance(val, (dict, list)):
            raise PlanError(f"environment.{key}: expected a string or null")
        item: dict[str, Any] = {"name": key}
        if val is None:
            item["required"] = True
        else:
            item["default"] = ("true" if val else "false") if isinstance(val, bool) else str(val)
        if SECRET.search(key):
            item["secret"] = True
        env.append(item)
    return env, steam_id


def _strip(source: str) -> str:
    for prefix in ("~!/", "~!", "./"):
        if source.startswith(prefix):
            return source[len(prefix):]
    return source


def _data_path(value: Any) -> str:
    volumes = {_strip(s).strip("/"): t for s, t in _pairs(value, "volumes")}
    for name in SAVE_VOLUMES:
        target = volumes.get(name)
        if target is None:
            continue
        if not isinstance(target, str) or not target.startswith("/"):
            raise PlanError(f"volumes.~!/{name}: {target!r} is not an absolute path")
        return target.rstrip("/") or "/"
    raise PlanError("volumes: no save volume (~!/user or ~!/data) to keep as the data path")


def _files(value: Any, data_path: str) -> list[dict[str, str]]:
    out = []
    for source, target in _pairs(value, "files", key_field="path"):
        name = _strip(source).rsplit("/", 1)[-1]
        if not isinstance(target, str) or not target.startswith("/"):
            raise PlanError(f"files.{source}: {target!r} is not an absolute path")
        if target.rstrip("/") != data_path.rstrip("/") and name:
            out.append({"name": name, "path": target})
    return out
