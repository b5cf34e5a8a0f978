"""PEON's REST payload → a GameServer manifest (pure)."""
from __future__ import annotations

import re
from typing import Any, Mapping

from peon import API_VERSION


class PayloadError(ValueError):
    pass


def dns_label(text: str) -> str:
    """A Kubernetes object name from a free-form server name: lowercase, '-' for the rest,
    starting with a letter (a GameServer's name names its Service): "7 Days Crew" is
    "gs-7-days-crew"."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if name and not name[0].isalpha():
        name = f"gs-{name}"
    name = name[:63].rstrip("-")
    if not name:
        raise PayloadError(f"cannot make an object name from {text!r}")
    return name


def file_name(text: str) -> str:
    """A plain file name from PEON's free-form one ("server config.json" → "server_config.json"):
    a file setting's name is the file's name, never a path."""
    last = re.split(r"[\\/]", text.strip())[-1]  # a path's last part: PEON wrote files by name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("_") or "file"
    return "file" if name in (".", "..") else name[:253]


def kept_path(original: str, plain: str, game: Mapping[str, Any] | None) -> str | None:
    """Where PEON's file of a name that is not a plain one goes, under the name PEON gave it
    ("server settings.v2.txt" stays that, not server_settings.v2.txt, so the game reads it):
    the Game's own path for that file, else its config folder. None when the name is plain,
    is a path (only its last part is kept: never a path of the payload's), or no Game says
    where the folder is."""
    name = original.strip()
    if name == plain or not name or re.search(r"[\\/\x00-\x1f]", name) or name in (".", ".."):
        return None
    spec = (game or {}).get("spec") or {}
    files = {f.get("name"): f.get("path") for f in spec.get("files") or [] if isinstance(f, Mapping)}
    if files.get(name):
        return str(files[name])
    if files.get(plain):  # the Game places the file under its plain name: the operator does
        return None
    folder = str(spec.get("configPath") or spec.get("dataPath") or "").rstrip("/")
    path = f"{folder}/{name}"
    return path if folder.startswith("/") and len(path) <= 1024 else None


def check_payload(payload: Mapping[str, Any]) -> None:
    """PEON's payload has the shape convert reads, or PayloadError names the field: a wrong
    type anywhere is the sender's mistake, told as such (never an error of ours)."""
    if not isinstance(payload, Mapping):
        raise PayloadError("the payload must be a JSON object")
    for key in ("game_uid", "servername"):
        if not payload.get(key):
            raise PayloadError(f"the payload has no {key!r}")
        if not isinstance(payload[key], str):
            raise PayloadError(f"{key}: must be a string, not {type(payload[key]).__name__}")
    if payload.get("description") is not None and not isinstance(payload["description"], str):
        raise PayloadError("description: must be a string")
    settings = payload.get("settings")
    if settings is not None and not isinstance(settings, list):
        raise PayloadError(f"settings: must be a list, not {type(settings).__name__}")
    for i, s in enumerate(settings or []):
        if not isinstance(s, Mapping):
            raise PayloadError(f"settings[{i}]: must be an object, not {type(s).__name__}")
        if s.get("name") is not None and not isinstance(s["name"], str):
            raise PayloadError(f"settings[{i}].name: must be a string")
        if s.get("type") == "env" and not isinstance(s.get("content") or {}, Mapping):
            raise PayloadError(f"settings[{i}].content: an env setting's content is an object "
                               "of variables")
        if s.get("type") == "env" and any(isinstance(v, (Mapping, list)) or v is None
                                          for v in (s.get("content") or {}).values()):
            raise PayloadError(f"settings[{i}].content: a variable's value is a string or a number")


def convert(payload: Mapping[str, Any], namespace: str | None = None,
            secret_env: bool = False, game: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The GameServer for a PEON payload. With `secret_env`, env settings go into a Secret
    manifest of their own and the GameServer names it by secretRef (keep that one out of Git).
    With the payload's `game` (its Game object), a file whose name is not a plain one keeps
    that name through `path` (kept_path)."""
    check_payload(payload)
    name = dns_label(payload["servername"])
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    out: list[dict[str, Any]] = []
    settings = []
    for i, s in enumerate(payload.get("settings") or []):
        kind = s.get("type")
        if kind not in ("env", "json", "txt"):
            raise PayloadError(f"settings[{i}]: type must be env, json or txt, not {kind!r}")
        sname = s.get("name") or f"{kind}-{i}"
        if kind == "env" and secret_env:
            secret_name = f"{name}-{dns_label(sname)}"
            out.append({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {**meta, "name": secret_name}, "type": "Opaque",
                        "stringData": {k: str(v) for k, v in (s.get("content") or {}).items()}})
            settings.append({"type": "env", "name": sname, "secretRef": {"name": secret_name}})
        elif kind == "env":
            settings.append({"type": "env", "name": sname,
                             "content": {k: str(v) for k, v in (s.get("content") or {}).items()}})
        else:
            plain = file_name(sname)
            entry = {"type": kind, "name": plain, "content": s.get("content")}
            path = kept_path(sname, plain, game)
            if path:
                entry["path"] = path
            settings.append(entry)
    spec: dict[str, Any] = {"gameUid": str(payload["game_uid"]).lower(),
                            "serverName": payload["servername"]}
    if payload.get("description"):
        spec["description"] = payload["description"]
    if settings:
        spec["settings"] = settings
    out.append({"apiVersion": API_VERSION, "kind": "GameServer", "metadata": meta, "spec": spec})
    return out
