"""The PEON API's decisions, pure: GameServers and Games in, PEON's JSON shapes out; PEON's
create bodies in, the GameServer and Secret to make out. `server.py` does the I/O.

A PEON server uid is `<game_uid>.<warcamp>`; here the warcamp is the GameServer's name, so
`valheim.vikings` is the GameServer `vikings` of the Game `valheim` (or one of its aliases).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import secrets
from typing import Any, Iterable, Mapping

from peon import API_VERSION, LABEL_GAMESERVER
from peon.shared import actions, clock
from peon.shared.actions import BadRequest
from peon.shared.convert import dns_label
from peon.shared.model import is_env_name

CREATED_BY = "app.kubernetes.io/created-by"
API_NAME = "peon-api"
ANNOTATION_DESCRIPTION = "peon.dev/description"  # the API's description of a Git-owned server
# Body keys of a create that are not the game's variables.
CREATE_KEYS = {"description", "start_later", "interval", "epoch_time", "game_uid", "warcamp",
               "servername"}
SECRET_NAME = re.compile(r"PASS|TOKEN|SECRET|GSLT|KEY", re.I)
STATES = {  # phase -> (container_state, server_state), in PEON's words
    "Running": ("running", "STARTED"),
    "Starting": ("running", "INITIALIZING"),
    "Pending": ("created", "INITIALIZING"),
    "Stopping": ("running", "OFFLINE"),
    "Stopped": ("exited", "OFFLINE"),
    "Error": ("dead", "ERROR"),
}
ADJECTIVES = ("brave", "calm", "eager", "fierce", "gentle", "happy", "jolly", "lucky", "mighty",
              "noble", "proud", "quick", "quiet", "rapid", "steady", "swift", "wild", "wise")
NOUNS = ("badger", "bear", "boar", "eagle", "falcon", "fox", "hawk", "lynx", "moose", "otter",
         "raven", "stag", "troll", "viking", "wolf", "wyvern")


class NotFound(LookupError):
    """An unknown server, plan or action; the message says which."""


class Conflict(Exception):
    """A request that cannot be carried out on this object as it is (a name taken, a server
    whose spec lives in Git); the message says why and what to do."""


# --- request bodies ---------------------------------------------------------------------------

MAX_DEPTH = 16  # PEON's bodies are two levels deep (1.0's settings); more is not a request of ours
SURROGATE = re.compile("[\ud800-\udfff]")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON body as an object ({} when there is none), or BadRequest naming what is wrong:
    not JSON, too deep, not an object, or a field no Kubernetes object could hold."""
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except RecursionError as e:  # the parser's own recursion: far deeper than MAX_DEPTH
        raise BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep") from e
    except ValueError as e:  # not JSON, not UTF-8, or an integer of more than 4300 digits
        raise BadRequest(f"the body is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    check_values(doc)
    return doc


def check_values(doc: Any) -> None:
    """Every value of a parsed body (without recursion, so no depth can overflow): at most
    MAX_DEPTH levels, finite numbers, and text that is valid Unicode without NUL (a lone
    surrogate cannot be encoded for the API server; a NUL cannot be an environment value)."""
    todo: list[tuple[str, Any, int]] = [("", doc, 0)]
    while todo:
        where, value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{where}: {value} is not a number Kubernetes can hold")
        if isinstance(value, dict):
            for k, v in value.items():
                _check_text(f"{where}.{k}" if where else k, k, "a key")
                todo.append((f"{where}.{k}" if where else k, v, depth + 1))
        elif isinstance(value, list):
            todo.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str):
            _check_text(where, value, "text")


def _check_text(where: str, text: str, what: str) -> None:
    if SURROGATE.search(text) or "\x00" in text:
        shown = where.encode("ascii", "backslashreplace").decode()
        raise BadRequest(f"{shown}: {what} with a NUL or a lone surrogate (not valid Unicode)")


# --- names -----------------------------------------------------------------------------------------

def uid_of(gs: Mapping[str, Any]) -> str:
    return f"{gs['spec']['gameUid']}.{gs['metadata']['name']}"


def split_uid(uid: str) -> tuple[str, str | None]:
    game, _, warcamp = uid.partition(".")
    return game, (warcamp or None)


OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def could_name_an_object(name: str | None) -> bool:
    """Whether `name` could be a Kubernetes object's name; a path's name that could not is not
    found without asking the cluster (and never reaches a URL of the API server)."""
    return bool(name) and bool(OBJECT_NAME.match(name))


def check_warcamp(warcamp: str) -> str:
    if "." in warcamp:
        raise BadRequest(f"warcamp: {warcamp!r} may not contain a dot")
    try:
        label = dns_label(warcamp)
    except ValueError:
        label = ""
    if label != warcamp or len(warcamp) > 40:
        hint = f" (try {label[:40]!r})" if label else ""
        raise BadRequest(f"warcamp: {warcamp!r} must be at most 40 lowercase letters, digits and "
                         f"'-', starting with a letter{hint}: it names the server's Kubernetes objects")
    return warcamp


def random_warcamp() -> str:
    return f"{secrets.choice(ADJECTIVES)}-{secrets.choice(NOUNS)}"


def created_here(gs: Mapping[str, Any]) -> bool:
    """Whether the API made this server (so its spec is the API's to write); anything else's
    spec lives elsewhere (Git, kubectl) and the API only annotates it."""
    return (gs["metadata"].get("labels") or {}).get(CREATED_BY) == API_NAME


# --- the server object ------------------------------------------------------------------------------

def description_of(gs: Mapping[str, Any]) -> str:
    return ((gs["metadata"].get("annotations") or {}).get(ANNOTATION_DESCRIPTION)
            or (gs.get("spec") or {}).get("description") or "")


def server_config(gs: Mapping[str, Any]) -> dict[str, Any]:
    """What the server says about itself: where to connect and who is on. Never a password:
    nothing here comes from settings or Secrets."""
    status = gs.get("status") or {}
    if status.get("phase") not in ("Running", "Starting"):
        return {"state": "OFFLINE"}
    out: dict[str, Any] = {"state": status.get("phase", "").upper()}
    host, _, port = (status.get("endpoint") or "").rpartition(":")
    if host:
        out["address"], out["port"] = host, int(port) if port.isdigit() else port
    players = status.get("players") or {}
    if players.get("online") is not None:
        out["players"] = players["online"]
        if players.get("max") is not None:
            out["max_players"] = players["max"]
    why = (status.get("uptime") or {}).get("message")
    if why:
        out["why"] = why
    out.update(maintenance_config(status.get("maintenance") or {}))
    return out


def maintenance_config(m: Mapping[str, Any]) -> dict[str, Any]:
    """A change that waits for an empty server (issue 28): what, why, until when (Unix
    seconds), whether players can be warned, and the next scheduled restart."""
    out: dict[str, Any] = {}
    if m.get("pending"):
        deadline = clock.parse(m.get("deadline"))
        out["pending_change"] = {"change": m["pending"], "reason": m.get("reason"),
                                 "message": m.get("message"),
                                 "until": int(deadline.timestamp()) if deadline else None}
    if m.get("console"):
        out["warnings"] = m["console"]
    nxt = clock.parse(m.get("nextRestart"))
    if nxt:
        out["next_restart"] = int(nxt.timestamp())
    return out


def server_object(gs: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """PEON's v1 server object, from the GameServer's spec and status."""
    status = gs.get("status") or {}
    container, server = STATES.get(status.get("phase", ""), ("created", "UNKNOWN"))
    image = status.get("image") or (gs.get("spec") or {}).get("image") or ""
    stop = actions.scheduled_stop(gs, now)
    return {"game_uid": gs["spec"]["gameUid"], "servername": gs["metadata"]["name"],
            "container_type": "kubernetes", "build_version": image.rpartition(":")[2] if ":" in image else image,
            "container_state": container, "server_state": server,
            "server_config": server_config(gs), "description": description_of(gs),
            "time": int(stop.timestamp()) if stop else None,
            "last_update": last_update(status.get("maintenance") or {})}


def last_update(m: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last update applied (issue 28, item 4; a field PEON's object lacks, added): the
    image pulled again, when it was asked for and when its rollout was applied (Unix seconds;
    `applied` null when the operator's status lost it). None before any update."""
    asked = clock.parse(m.get("lastUpdate"))
    if asked is None:
        return None
    applied = clock.parse(m.get("updatedAt"))
    return {"image": m.get("updatedImage") or None, "asked": int(asked.timestamp()),
            "applied": int(applied.timestamp()) if applied else None}


def server_object_1_0(gs: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    v1 = server_object(gs, now)
    return {k: v1[k] for k in ("game_uid", "servername", "container_state", "server_state",
                               "server_config", "description", "time")}


def sorted_servers(servers: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(servers, key=lambda g: (g["spec"]["gameUid"], g["metadata"]["name"]))


# --- plans (the Game catalogue) -----------------------------------------------------------------

def plans(games: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    out = [{"title": (g.get("spec") or {}).get("title") or g["metadata"]["name"],
            "game_uid": g["metadata"]["name"], "plan_url": (g.get("spec") or {}).get("source", "")}
           for g in games]
    return sorted(out, key=lambda p: (p["title"].lower(), p["game_uid"]))


def plan(game: Mapping[str, Any]) -> dict[str, str]:
    """What a create of this game takes: each required variable as "", each optional one with
    its default (a default the operator fills in, such as the server's name, as "")."""
    spec = game.get("spec") or {}
    out: dict[str, str] = {}
    for e in spec.get("env") or []:
        default = e.get("default")
        out[e["name"]] = "" if e.get("required") or default is None or "$(" in str(default) \
            else str(default)
    out["description"] = f"A {spec.get('title') or game['metadata']['name']} game server for Peon."
    return out


def find_game(games: Iterable[Mapping[str, Any]], uid: str) -> Mapping[str, Any]:
    for g in games:
        if g["metadata"]["name"] == uid or uid in ((g.get("spec") or {}).get("aliases") or []):
            return g
    raise NotFound(f"plan [{uid}] not found")


# --- create -------------------------------------------------------------------------------------

def _env_entry(game: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for e in (game.get("spec") or {}).get("env") or []:
        if e["name"] == name or name in (e.get("aliases") or []):
            return e
    return None


def split_env(game: Mapping[str, Any], body: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The create body's variables, as (plain, secret): a variable is secret when the Game says
    so (under its name or an alias) or its name says password, token, key or secret."""
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for key, value in body.items():
        if key in CREATE_KEYS:
            continue
        if not is_env_name(key):
            raise BadRequest(f"{key!r} is not a variable name")
        if isinstance(value, (dict, list)) or value is None:
            raise BadRequest(f"{key}: a variable's value is a string or a number, not "
                             f"{type(value).__name__}")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        entry = _env_entry(game, key)
        (secret if (entry and entry.get("secret")) or SECRET_NAME.search(key) else plain)[key] = text
    missing = []
    for e in (game.get("spec") or {}).get("env") or []:
        names = {e["name"], *(e.get("aliases") or [])}
        if e.get("required") and e.get("default") is None and not names & (plain.keys() | secret.keys()):
            alias = f" (or {', '.join(e['aliases'])})" if e.get("aliases") else ""
            missing.append(f"{e['name']}{alias}")
    if missing:
        raise BadRequest(f"missing required variables for {game['metadata']['name']}: "
                         + "; ".join(missing))
    return plain, secret


def create_objects(game: Mapping[str, Any], warcamp: str, body: Mapping[str, Any],
                   namespace: str, now: dt.datetime) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The GameServer (and the Secret for its secret variables, if any) for PEON's create."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    description = body.get("description", "")
    if not isinstance(description, str):
        raise BadRequest("description: must be a string")
    plain, secret = split_env(game, body)
    stop_at = actions.stop_time(body, now)
    settings: list[dict[str, Any]] = []
    if plain:
        settings.append({"type": "env", "name": "api", "content": plain})
    secret_obj = None
    if secret:
        secret_name = f"{warcamp}-api-env"
        secret_obj = api_secret(secret_name, namespace, warcamp, secret)
        settings.append({"type": "env", "name": "api-secret", "secretRef": {"name": secret_name}})
    annotations: dict[str, str] = {}
    if body.get("start_later") in (True, "true", "True", 1, "1"):
        annotations = {k: v for k, v in actions.stop_patch(now)["metadata"]["annotations"].items() if v}
    elif stop_at:
        annotations = {k: v for k, v in actions.start_patch(now, stop_at)["metadata"]["annotations"].items() if v}
    gs = {"apiVersion": API_VERSION, "kind": "GameServer",
          "metadata": {"name": warcamp, "namespace": namespace, "labels": {CREATED_BY: API_NAME},
                       **({"annotations": annotations} if annotations else {})},
          "spec": {"gameUid": game["metadata"]["name"], "serverName": warcamp,
                   "description": description, "settings": settings}}
    return gs, secret_obj


def reuse_ops(secret: Mapping[str, Any], server: str) -> list[dict[str, Any]]:
    """A JSON patch that rewrites an existing Secret of `secret`'s name with its data, only if
    that Secret is the API's for this server (a leftover of its own create that failed, or of
    an earlier server of that name on its way out): the API may not read Secrets, so the
    patch itself tests the labels, and the API server refuses it whole (422) when they differ.
    The API never writes or deletes an object it did not make for this server."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    labels = "/metadata/labels/"
    return [{"op": "test", "path": labels + CREATED_BY.replace("/", "~1"), "value": API_NAME},
            {"op": "test", "path": labels + LABEL_GAMESERVER.replace("/", "~1"), "value": server},
            {"op": "add", "path": "/data", "value": data}]


def secret_clash(name: str, server: str) -> str:
    return (f"Secret {name} exists and was not made by Peon's API for server {server}; "
            "choose another name")


def api_secret(name: str, namespace: str, server: str, data: Mapping[str, str]) -> dict[str, Any]:
    """A Secret the API makes for a server's secret variables, labelled as the API's and
    with the server it is for (so a clash with anyone else's is told, never written over)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {CREATED_BY: API_NAME, LABEL_GAMESERVER: server}},
            "stringData": dict(data)}


def started_later(body: Mapping[str, Any]) -> bool:
    return body.get("start_later") in (True, "true", "True", 1, "1")


def update_mode(body: Mapping[str, Any]) -> str:
    mode = body.get("mode", "full") if isinstance(body, Mapping) else "full"
    if mode == "reinit":
        raise BadRequest("mode: reinit would wipe the world; Peon never deletes a world through "
                         "update (eradicate does, after a final backup)")
    if mode not in ("full", "image", "server", "game"):
        raise BadRequest(f"mode: {mode!r} is not one of full, image, server, game")
    return mode
