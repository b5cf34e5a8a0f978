"""The PEON API's OpenAPI document (served at /openapi.json), built from one table of routes."""
from __future__ import annotations

from typing import Any

SERVER = {"type": "object", "properties": {
    "game_uid": {"type": "string"}, "servername": {"type": "string"},
    "container_type": {"type": "string"}, "build_version": {"type": "string"},
    "container_state": {"type": "string", "enum": ["running", "created", "exited", "dead"]},
    "server_state": {"type": "string", "enum": ["STARTED", "INITIALIZING", "OFFLINE", "ERROR", "UNKNOWN"]},
    "server_config": {"type": "object", "description": "address, port, players; never a password"},
    "description": {"type": "string"},
    "time": {"type": ["integer", "null"], "description": "the scheduled stop, Unix seconds"},
    "last_update": {"type": ["object", "null"], "description": "the last update applied (the "
                    "image pulled again): image, asked and applied (Unix seconds); null before "
                    "any", "properties": {"image": {"type": ["string", "null"]},
                                          "asked": {"type": "integer"},
                                          "applied": {"type": ["integer", "null"]}}}}}
STATUS = {"type": "object", "properties": {"status": {"type": "string"}, "info": {"type": "string"}}}
TIMER = {"type": "object", "properties": {
    "interval": {"type": "string", "example": "5h", "description": "d/h/m/s; a bare number is minutes"},
    "epoch_time": {"type": "string", "example": "1638230400"}}}
UID = {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "<game_uid>.<warcamp>"}

# (method, path, summary, request body schema, 200 schema, error codes)
ROUTES: list[tuple[str, str, str, Any, Any, tuple[int, ...]]] = [
    ("get", "/api/v1/orchestrator", "The API's version", None,
     {"type": "object", "properties": {"version": {"type": "string"}}}, ()),
    ("get", "/api/v1/servers", "Every server, sorted by game and name", None,
     {"type": "array", "items": SERVER}, ()),
    ("put", "/api/v1/servers", "Import: the servers that exist", None, {"type": "array", "items": SERVER}, ()),
    ("get", "/api/v1/server/get/{uid}", "One server", None, SERVER, (404,)),
    ("get", "/api/v1/server/stats/{uid}", "One server with its stats", None, SERVER, (404,)),
    ("put", "/api/v1/server/create/{uid}", "Create a server (uid: <game_uid>[.<warcamp>])",
     {"type": "object", "additionalProperties": {"type": "string"}, "properties": {
         "description": {"type": "string"}, "start_later": {"type": "boolean"},
         **TIMER["properties"]}}, SERVER, (400, 404, 409)),
    ("put", "/api/v1/server/start/{uid}", "Start (optionally for an interval or until a time)",
     TIMER, SERVER, (400, 404, 409)),
    ("put", "/api/v1/server/stop/{uid}", "Stop now, or schedule a stop", TIMER, SERVER, (400, 404)),
    ("put", "/api/v1/server/restart/{uid}", "Restart (a new pod)", None, SERVER, (404,)),
    ("put", "/api/v1/server/update/{uid}", "Restart with the image pulled again, after a backup, "
     "when the maintenance rules let it (mode full, image, server, game)",
     {"type": "object", "properties": {"mode": {"type": "string"}}}, STATUS, (400, 404)),
    ("put", "/api/v1/server/description/{uid}", "Set the description",
     {"type": "object", "required": ["description"], "properties": {"description": {"type": "string"}}},
     SERVER, (400, 404)),
    ("put", "/api/v1/server/save/{uid}", "Take a backup", None, STATUS, (404,)),
    ("get", "/api/v1/server/save/{uid}", "Download the newest good backup (a Peon archive)", None,
     {"type": "string", "format": "binary"}, (404, 409, 429)),
    ("delete", "/api/v1/server/destroy/{uid}", "Remove the server, keep its world",
     {"type": "object", "properties": {"eradicate": {"type": "boolean"}}}, STATUS, (404, 409)),
    ("delete", "/api/v1/server/eradicate/{uid}", "Remove the server and, after a final backup, its world",
     None, STATUS, (404, 409)),
    ("post", "/api/v1/server/console/{uid}", "Run one command in the server's console (the "
     "Game's RCON; an admin's key; the chart's api.console: true)", {
         "type": "object", "required": ["command"], "properties": {"command": {"type": "string"}}},
     {"type": "object", "properties": {"status": {"type": "string"}, "info": {"type": "string"},
                                       "answer": {"type": "string"}}}, (400, 403, 404, 409, 502)),
    ("get", "/api/v1/server/logs/{uid}", "The tail of the server's log (?lines=N, 1-2000; "
     "an admin's key)", None, {"type": "object", "properties": {
         "status": {"type": "string"}, "info": {"type": "string"}, "lines": {"type": "integer"},
         "logs": {"type": "string"}}}, (400, 403, 404, 409, 502)),
    ("post", "/api/v1/server/create", "Create a server (PEON's web UI: game_uid and servername "
     "in the body)", {"type": "object", "required": ["game_uid"], "properties": {
         "game_uid": {"type": "string"}, "servername": {"type": "string"},
         "description": {"type": "string"}}, "additionalProperties": {"type": "string"}},
     SERVER, (400, 403, 404, 409)),
    ("get", "/page/servers", "The web page's board: who the key is, every server's card "
     "(ETag; 304 when unchanged)", None, {"type": "object"}, ()),
    ("get", "/page/backups/{uid}", "A server's backups, newest first (an admin's key)", None,
     {"type": "object"}, (403, 404)),
    ("post", "/page/start/{uid}", "Start for {hours} (a player's key)",
     {"type": "object", "properties": {"hours": {"type": "number"}}}, {"type": "object"}, (400, 403, 404)),
    ("post", "/page/extend/{uid}", "Extend the session by {hours} (a player's key)",
     {"type": "object", "properties": {"hours": {"type": "number"}}}, {"type": "object"}, (400, 403, 404, 409)),
    ("post", "/page/stop/{uid}", "Stop now (a player's key)", None, {"type": "object"}, (403, 404)),
    ("post", "/page/backup/{uid}", "Back up now (an admin's key)", None, {"type": "object"}, (403, 404)),
    ("post", "/page/restore/{uid}", "Restore {backup} (an admin's key)",
     {"type": "object", "required": ["backup"], "properties": {"backup": {"type": "string"}}},
     {"type": "object"}, (400, 403, 404)),
    ("get", "/page/logs/{uid}", "The tail of the server's log (?lines=N; an admin's key)", None,
     {"type": "object"}, (400, 403, 404, 409, 502)),
    ("get", "/api/v1/plans", "The games that can be created", None,
     {"type": "array", "items": {"type": "object", "properties": {
         "title": {"type": "string"}, "game_uid": {"type": "string"}, "plan_url": {"type": "string"}}}}, ()),
    ("put", "/api/v1/plans", "Refresh the plans (the catalogue is always current)", None,
     {"type": "object"}, ()),
    ("get", "/api/v1/plan/{game_uid}", "What a create of this game takes", None,
     {"type": "object", "additionalProperties": {"type": "string"}}, (404,)),
    ("get", "/api/1.0/servers", "Every server (seed API)", None,
     {"type": "object", "properties": {"servers": {"type": "array", "items": SERVER}}}, ()),
    ("post", "/api/1.0/servers", "Create from PEON's seed payload",
     {"type": "object", "required": ["game_uid", "servername"]}, {"type": "object"}, (400, 404, 409)),
    ("get", "/api/1.0/server/get/{uid}", "One server (seed API)", None, {"type": "object"}, (404,)),
    ("get", "/api/1.0/plans", "The games (seed API)", None, {"type": "object"}, ()),
]
ERRORS = {400: "Bad input; the message says which field", 401: "No or a wrong X-Api-Key",
          403: "The key's role may not do this (the message names the role needed), or it "
               "reaches only other servers",
          404: "Unknown server, plan or action",
          409: "The name exists (a server, or a Secret the API did not make for it), or the "
               "server's spec lives elsewhere",
          429: "As many downloads as the API serves at once are running, or too many wrong "
               "keys came from this address; see Retry-After",
          502: "The cluster refused or failed"}


def document(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, body, result, codes in ROUTES:
        op: dict[str, Any] = {"summary": summary, "security": [{"apiKey": []}], "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": result}}},
            **{str(c): {"description": ERRORS[c]} for c in (*codes, 401, 429)}}}
        params = [p for p in ({**UID, "name": n} for n in ("uid", "game_uid")) if "{" + p["name"] + "}" in path]
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = {"content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = op
    return {"openapi": "3.1.0",
            "info": {"title": "Peon's PEON API", "version": version,
                     "description": "PEON's orchestrator API over Kubernetes GameServers"},
            "components": {"securitySchemes": {"apiKey": {"type": "apiKey", "in": "header",
                                                          "name": "X-Api-Key"}}},
            "paths": paths}
