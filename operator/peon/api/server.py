"""The PEON API over GameServers: PEON's Discord bot and web UI drive Kubernetes servers with
the REST calls they already make (`/api/v1`, and the seed's `/api/1.0`).

    peon-api --namespace games --api-key-file /etc/peon-api/key [--keys-file FILE] [--port 8000]

Every request needs `X-Api-Key` (compared in constant time; there is no default key): the
API's own key (an admin's) or a friend's from the keys file (keys.py: a name, a role, maybe
some servers), and each write is an Event on its server naming who asked. Wrong keys are
limited per address. `/` is Peon's web page (api/page/, its data at /page/*). Servers
are the GameServers of one namespace; plans are the Game catalogue. The API writes spec only
of servers it created (label app.kubernetes.io/created-by=peon-api); every other server (its
spec in Git) is started, stopped and restarted through the operator's annotations, so its spec
and generation never change. Decisions are in api_views.py and actions.py; this is I/O.
"""
from __future__ import annotations

import argparse
import asyncio
import contextvars
import datetime as dt
import importlib.resources
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import urllib3
from aiohttp import web
from kubernetes.client.rest import ApiException

from peon import LABEL_GAMESERVER, __version__
from peon.shared import actions, backup as bk, clock, download
from . import cards, console, keys, views
from peon.shared.actions import BadRequest
from .views import Conflict, NotFound
from peon.shared.kube import Kube
from peon.shared.pods import log_pod
from peon.shared.rcon import RconError

log = logging.getLogger("peon.api")
LOG_SECONDS = 5  # a log tail's wait for the kubelet (PEON's bot and UI give up after 10 s)


class Upstream(Exception):
    """The cluster did not give what it was asked for in time (a pod's log): a 502."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CORS_HEADERS = {"Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Headers": "Content-Type, api_key, Authorization, X-Api-Key",
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS"}
# /api/v1/server/{action}/{uid}: the methods each action answers.
V1_SERVER_ACTIONS = {"get": ("GET",), "stats": ("GET",), "create": ("PUT",), "start": ("PUT",),
                     "stop": ("PUT",), "restart": ("PUT",), "update": ("PUT",),
                     "description": ("PUT",), "save": ("PUT", "GET"), "destroy": ("DELETE",),
                     "eradicate": ("DELETE",), "logs": ("GET",), "console": ("POST",)}
# Who is asking, for the request being handled (set by the auth middleware).
FRIEND: contextvars.ContextVar[keys.Friend | None] = contextvars.ContextVar("friend", default=None)
PUBLIC = {"/", "/page/app.js", "/page/app.css", "/openapi.json"}
# The page's own answers: nothing from elsewhere, no inline script or style, no framing.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; "
                "style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                "form-action 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY"}
ASSETS = {"/": ("index.html", "text/html"), "/page/app.js": ("app.js", "text/javascript"),
          "/page/app.css": ("app.css", "text/css")}


def error(status: int, info: str, **extra: Any) -> web.Response:
    return web.json_response({"status": "error", "info": info, **extra}, status=status,
                             headers=CORS_HEADERS)


def ok(data: Any) -> web.Response:
    return web.json_response(data, headers=CORS_HEADERS)


class KeyFile:
    """The API's own key (an admin's) and the friends' keys file, read again when the file
    changed (the kubelet swaps a mounted Secret's files): its stat is looked at most once a
    second. A file that cannot be read or parsed keeps the friends read before, and says why
    in the log once (never a key)."""

    def __init__(self, admin: str, path: str | None):
        self.admin, self.path = keys.admin_key(admin), path
        self.ring, self.seen, self.checked = keys.Keyring([self.admin]), None, 0.0

    def keyring(self, now: float) -> keys.Keyring:
        if self.path and now - self.checked >= 1:
            self.checked = now
            self.reload()
        return self.ring

    def reload(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self.seen:
                return
            with open(self.path, "rb") as f:
                text = f.read(keys.MAX_FILE + 1)
        except OSError as e:
            if self.seen != "missing":
                log.warning("friends' keys: cannot read %s (%s); only the API's own key and "
                            "the friends read before are accepted", self.path, e.strerror)
                self.seen = "missing"
            return
        self.seen = stamp
        try:
            friends, problems = keys.parse_keys(text)
        except keys.KeysFileError as e:
            log.warning("friends' keys: %s; the keys read before stay", e)
            return
        for p in problems:
            log.warning("friends' keys: %s", p)
        self.ring = keys.Keyring([self.admin, *friends])
        log.info("friends' keys: %d read from %s (%s)", len(friends), self.path,
                 ", ".join(f"{f.name}: {f.role}" for _, f in friends) or "none")


class Api:
    """The routes, over one namespace of one cluster."""

    def __init__(self, kube: Kube, namespace: str, key: str, max_downloads: int = 2,
                 body_timeout: float = 30, keys_file: str | None = None,
                 throttle: keys.Throttle | None = None, read_log: Callable[..., str] | None = None,
                 list_ttl: float = 2.0):
        if not key:
            raise ValueError("no API key")
        if max_downloads < 1:
            raise ValueError("max_downloads must be at least 1")
        self.kube, self.namespace = kube, namespace
        self.keys = KeyFile(key, keys_file)
        self.throttle = throttle or keys.Throttle()
        self.read_log = read_log or self._read_log
        self.body_timeout = body_timeout
        # The page's polls share one list of the servers, at most list_ttl old (a write
        # through the API drops it): many open pages cost the cluster one list per period.
        self.list_ttl, self.listed, self.listing = list_ttl, (0.0, []), asyncio.Lock()
        # Downloads run in threads of their own, never in the default pool the other routes'
        # calls use: a list never waits behind a download. A slot is held until its thread
        # ends (a client gone does not stop an exec already streaming).
        self.max_downloads, self.downloads_running = max_downloads, 0
        self.download_pool = ThreadPoolExecutor(max_downloads, thread_name_prefix="download")

    # --- plumbing ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.cors, self.auth, self.errors],
                              client_max_size=256 * 1024)
        r = app.router
        r.add_get("/openapi.json", self.openapi)
        for path in ASSETS:
            r.add_get(path, self.asset)
        r.add_get("/page/servers", self.page_servers)
        r.add_get("/page/backups/{name}", self.page_backups)
        r.add_post("/page/{action:start|extend|stop|backup|restore}/{name}", self.page_action)
        r.add_get("/page/download/{name}/{backup}", self.page_download)
        r.add_get("/page/logs/{name}", self.page_logs)
        r.add_post("/api/v1/server/create", self.create_v1_post)
        r.add_get("/api/v1/orchestrator", self.orchestrator)
        r.add_get("/api/v1/servers", self.servers)
        r.add_put("/api/v1/servers", self.servers)  # import: the servers that exist
        r.add_get("/api/v1/plans", self.plans)
        r.add_put("/api/v1/plans", self.refresh_plans)
        r.add_get("/api/v1/plan/{game_uid}", self.plan)
        r.add_route("*", "/api/v1/server/{action}/{uid}", self.server_action)
        r.add_get("/api/1.0/servers", self.servers_1_0)
        r.add_post("/api/1.0/servers", self.create_1_0)
        r.add_get("/api/1.0/server/get/{uid}", self.get_1_0)
        r.add_route("*", "/api/1.0/server/{action}/{uid}", self.server_action_1_0)
        r.add_route("GET", "/api/1.0/plans", self.plans_1_0)
        r.add_route("PUT", "/api/1.0/plans", self.plans_1_0)
        r.add_route("*", "/api/{version}/{tail:.*}", self.unknown)
        return app

    @web.middleware
    async def cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS_HEADERS)
        return await handler(request)

    @web.middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The key names a friend with a role; a role too low for the request is a 403 that
        says which is needed. Wrong keys are counted per client address: past the limit,
        every key from there is a 429 until the window has passed (guessing cannot go on)."""
        if request.path in PUBLIC and request.method in ("GET", "HEAD"):
            return await handler(request)
        now, address = time.monotonic(), request.remote or "unknown"
        wait = self.throttle.wait(address, now)
        if wait:
            return web.json_response(
                {"status": "error", "info": f"too many wrong keys from {address}; try again in "
                 f"{int(wait) + 1} s"}, status=429,
                headers={**CORS_HEADERS, "Retry-After": str(int(wait) + 1)})
        given = request.headers.get("X-Api-Key", "")
        friend = self.keys.keyring(now).find(given) if given else None
        if friend is None:
            if given:
                self.throttle.failed(address, now)
                log.warning("a wrong key from %s for %s %s", address, request.method,
                            request.path[:200])
            return error(401, "this key is not known here: check it with whoever runs Peon "
                              "(a valid X-Api-Key header is required)")
        need = keys.needed_role(request.method, request.path)
        if not friend.may(need):
            return error(403, f"{friend.name}'s key is a {friend.role} key: this needs "
                              f"{'an' if need == keys.ADMIN else 'a'} {need}'s")
        token = FRIEND.set(friend)
        try:
            return await handler(request)
        finally:
            FRIEND.reset(token)

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bad input is a 4xx with a message, never a 500; what the cluster refused says so."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except BadRequest as e:
            return error(400, str(e))
        except NotFound as e:
            return error(404, str(e))
        except keys.Forbidden as e:
            return error(403, str(e))
        except Conflict as e:
            return error(409, str(e))
        except download.DownloadError as e:
            return error(409, str(e))
        except Upstream as e:
            return error(502, str(e))
        except ApiException as e:
            return self._cluster_error(e)
        except Exception:  # a bug of ours: logged whole, answered without details
            log.exception("%s %s failed", request.method, request.path)
            return error(500, "internal error (see the peon-api log)")

    @staticmethod
    def _cluster_error(e: ApiException) -> web.Response:
        try:
            message = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            message = e.reason
        if e.status == 404:
            return error(404, message)
        if e.status == 409:
            return error(409, message)
        if e.status in (400, 422):
            return error(400, message)
        return error(502, f"the cluster answered {e.status}: {message}")

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    async def body(self, request: web.Request) -> dict[str, Any]:
        """The JSON body as an object ({} when there is none), read within body_timeout (a
        client that sends its body slowly gets a 408, not a handler held open)."""
        try:
            async with asyncio.timeout(self.body_timeout):
                raw = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=json.dumps({"status": "error", "info": f"the body did not arrive within "
                                 f"{self.body_timeout:g} s"}),
                content_type="application/json", headers=CORS_HEADERS) from None
        return views.parse_body(raw)

    # --- reads -------------------------------------------------------------------------------

    async def list_servers(self, fresh: bool = True) -> list[dict]:
        """The servers this key reaches; with fresh=False, a list at most list_ttl old."""
        if fresh:
            servers = await self.call(self.kube.list, "GameServer", self.namespace)
        else:
            async with self.listing:
                at, servers = self.listed
                if time.monotonic() - at >= self.list_ttl:
                    servers = await self.call(self.kube.list, "GameServer", self.namespace)
                    self.listed = (time.monotonic(), servers)
        friend = FRIEND.get()
        return views.sorted_servers(g for g in servers
                                    if friend is None or friend.sees(g["metadata"]["name"], views.uid_of(g)))

    async def server(self, uid: str) -> dict:
        game_uid, name = views.split_uid(uid)
        friend = FRIEND.get()
        gs = await self.call(self.kube.get, "GameServer", self.namespace, name) \
            if views.could_name_an_object(name) else None
        if gs is None or (friend is not None and not friend.sees(name, views.uid_of(gs))):
            raise NotFound(f"server [{uid}] not found")
        if game_uid != gs["spec"]["gameUid"]:
            game = await self.call(self.kube.get, "Game", None, gs["spec"]["gameUid"]) or {}
            if game_uid not in ((game.get("spec") or {}).get("aliases") or []):
                raise NotFound(f"server [{uid}] not found (it is {views.uid_of(gs)})")
        return gs

    async def games(self) -> list[dict]:
        return await self.call(self.kube.list, "Game")

    # --- /api/v1 --------------------------------------------------------------------------------

    async def orchestrator(self, request: web.Request) -> web.Response:
        return ok({"version": __version__})

    async def servers(self, request: web.Request) -> web.Response:
        now = clock.now()
        return ok([views.server_object(g, now) for g in await self.list_servers()])

    async def plans(self, request: web.Request) -> web.Response:
        return ok(views.plans(await self.games()))

    async def refresh_plans(self, request: web.Request) -> web.Response:
        # The catalogue is the cluster's Games, always current: nothing to fetch.
        return ok({"new_recipies": {}})

    async def plan(self, request: web.Request) -> web.Response:
        return ok(views.plan(views.find_game(await self.games(), request.match_info["game_uid"])))

    async def unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"error": f"Incorrect action [{request.match_info['tail']}] provided"},
                                 status=404, headers=CORS_HEADERS)

    async def server_action(self, request: web.Request) -> web.StreamResponse:
        action, uid = request.match_info["action"], request.match_info["uid"]
        if action not in V1_SERVER_ACTIONS:
            return web.json_response({"error": f"Incorrect action [{action}] provided"},
                                     status=404, headers=CORS_HEADERS)
        if request.method not in V1_SERVER_ACTIONS[action]:
            return error(405, f"{action} takes {' or '.join(V1_SERVER_ACTIONS[action])}, "
                              f"not {request.method}")
        if action == "create":
            return await self.create(uid, await self.body(request))
        gs = await self.server(uid)
        now = clock.now()
        if action == "get":
            return ok(views.server_object(gs, now))
        if action == "stats":
            status = gs.get("status") or {}
            return ok({**views.server_object(gs, now), "stats": {
                "phase": status.get("phase"), "players": (status.get("players") or {}).get("online"),
                "max_players": (status.get("players") or {}).get("max"),
                "last_backup": (status.get("backup") or {}).get("lastSuccessfulTime"),
                "last_offsite_backup": (status.get("backup") or {}).get("lastOffsiteTime"),
                "offsite_overdue": bool((status.get("backup") or {}).get("offsiteOverdue"))}})
        if action == "save" and request.method == "GET":
            return await self.download(request, gs)
        if action == "logs":
            lines = cards.log_lines(request.query)
            return ok({"status": "success", "info": views.uid_of(gs), "lines": lines,
                       "logs": await self.logs(gs, lines)})
        body = await self.body(request)
        if action in ("start", "stop", "restart", "description"):
            gs = await getattr(self, action)(gs, body, now)
            await self.record(gs, action, body)
            return ok(views.server_object(gs, now))
        if action == "update":
            mode = views.update_mode(body)
            gs = await self.patch(gs, actions.update_patch(now))  # peon.dev/update (issue 28)
            await self.record(gs, "update", {"mode": mode})
            return ok({"status": "success", "info": uid, "mode": mode,
                       "message": "after a backup, the server restarts with its image pulled "
                                  "again when its maintenance rules let it"})
        if action == "save":
            return ok({"status": "success", "info": await self.back_up(gs, now)})
        if action == "console":  # an admin's (keys.needed_role); api/console.py
            try:
                answer = await console.run(self.call, self.kube, self.namespace, gs, body)
            except RconError as e:  # its messages never hold the password
                raise Upstream(f"the console of [{uid}]: {e}") from None
            await self.record(gs, "console")
            return ok({"status": "success", "info": uid, "answer": answer})
        return await self.remove(gs, eradicate=action == "eradicate"
                                 or body.get("eradicate") in (True, "true", "True"))

    # --- who did what ----------------------------------------------------------------------------

    WHAT = {"start": "started the server", "stop": "stopped the server",
            "restart": "restarted the server", "description": "set the description",
            "update": "asked for an update", "save": "took a backup", "create": "created the server",
            "destroy": "destroyed the server (the world is kept)",
            "eradicate": "eradicated the server", "extend": "extended the session",
            "restore": "restored a backup", "console": "ran a console command"}

    async def record(self, gs: dict, action: str, detail: dict | None = None) -> None:
        """Who did what: the API's log, and an Event on the server naming the friend (an Event
        that cannot be posted is logged, never an error of the request)."""
        friend = FRIEND.get()
        who = friend.describe() if friend else "the API"
        extra = ", ".join(f"{k} {str(v)[:64]}" for k, v in (detail or {}).items()
                          if k in ("interval", "epoch_time", "hours", "until", "backup", "mode", "name"))
        what = self.WHAT[action] + (f" ({extra})" if extra else "")
        log.info("%s %s: %s", who, what, views.uid_of(gs))
        self.listed = (0.0, self.listed[1])  # the pages see it at their next poll
        await self.call(self.kube.event, gs, "Normal", f"Api{action.capitalize()}",
                        f"{who} {what} through peon-api")

    async def back_up(self, gs: dict, now: dt.datetime) -> str:
        run = actions.manual_backup(gs, now, {"app.kubernetes.io/created-by": views.API_NAME})
        await self.call(self.kube.create, run)
        await self.record(gs, "save", {"name": run["metadata"]["name"]})
        return run["metadata"]["name"]

    async def logs(self, gs: dict, lines: int) -> str:
        name = gs["metadata"]["name"]
        pods = await self.call(self.kube.list, "Pod", self.namespace, f"{LABEL_GAMESERVER}={name}")
        pod = log_pod(pods, name)
        if pod is None:
            raise Conflict(f"server [{views.uid_of(gs)}] has no pod to read a log from (phase: "
                           f"{(gs.get('status') or {}).get('phase') or 'unknown'})")
        try:
            return await self.call(self.read_log, self.namespace, pod["metadata"]["name"], lines)
        except (ApiException, web.HTTPException):
            raise
        except (OSError, urllib3.exceptions.HTTPError) as e:  # the kubelet slow or gone
            raise Upstream(f"the log of pod {pod['metadata']['name']} did not come within "
                           f"{LOG_SECONDS} s ({type(e).__name__})") from None

    def _read_log(self, namespace: str, pod: str, lines: int) -> str:
        from kubernetes.client import CoreV1Api
        text = CoreV1Api(self.kube.api).read_namespaced_pod_log(
            pod, namespace, container=bk.SERVER_CONTAINER, tail_lines=lines,
            limit_bytes=cards.MAX_LOG_BYTES, _request_timeout=LOG_SECONDS)
        return text if isinstance(text, str) else str(text)

    async def patch(self, gs: dict, patch: dict) -> dict:
        return await self.call(self.kube.merge_patch, "GameServer", self.namespace,
                               gs["metadata"]["name"], patch)

    async def start(self, gs: dict, body: dict, now: dt.datetime,
                    stop_at: dt.datetime | None = None) -> dict:
        patch = actions.start_patch(now, stop_at or actions.stop_time(body, now))
        if (gs.get("spec") or {}).get("state") == "Stopped":
            if not views.created_here(gs):
                raise Conflict(f"server [{views.uid_of(gs)}] has spec.state: Stopped where its spec "
                               "lives (Git); start it there")
            patch["spec"] = {"state": "Running"}  # the API's own server: one write
        return await self.patch(gs, patch)

    async def stop(self, gs: dict, body: dict, now: dt.datetime) -> dict:
        return await self.patch(gs, actions.stop_patch(actions.stop_time(body, now) or now, now))

    async def restart(self, gs: dict, body: dict, now: dt.datetime) -> dict:
        return await self.patch(gs, actions.restart_patch(now))

    async def description(self, gs: dict, body: dict, now: dt.datetime) -> dict:
        text = body.get("description")
        if not isinstance(text, str):
            raise BadRequest("description: a string is required")
        if views.created_here(gs):
            return await self.patch(gs, {"spec": {"description": text}})
        return await self.patch(gs, {"metadata": {"annotations": {views.ANNOTATION_DESCRIPTION: text}}})

    async def create(self, uid: str, body: dict) -> web.Response:
        game_uid, warcamp = views.split_uid(uid)
        game = views.find_game(await self.games(), game_uid)
        warcamp = warcamp or body.get("warcamp")  # the bot also sends it in the body
        if warcamp is not None and not isinstance(warcamp, str):
            raise BadRequest("warcamp: must be a string")
        warcamp = views.check_warcamp(warcamp) if warcamp else views.random_warcamp()
        self.may_create(warcamp, f"{game['metadata']['name']}.{warcamp}")
        gs, secret = views.create_objects(game, warcamp, body, self.namespace, clock.now())
        return await self.make(gs, secret, views.started_later(body))

    async def create_v1_post(self, request: web.Request) -> web.Response:
        """PEON's web UI: POST /api/v1/server/create with {game_uid, servername, ...}."""
        body = await self.body(request)
        game_uid, name = body.get("game_uid"), body.get("servername", body.get("warcamp"))
        if not isinstance(game_uid, str) or not game_uid or "." in game_uid:
            raise BadRequest("game_uid: the game's uid (a string without a dot) is required")
        if name is not None and not isinstance(name, str):
            raise BadRequest("servername: must be a string")
        return await self.create(f"{game_uid}.{name}" if name else game_uid, body)

    @staticmethod
    def may_create(name: str, uid: str) -> None:
        friend = FRIEND.get()
        if friend is not None and not friend.sees(name, uid):
            raise keys.Forbidden(f"{friend.name}'s key reaches only some servers, and {uid} is "
                                 "not one of them")

    async def make(self, gs: dict, secret: dict | None, later: bool) -> web.Response:
        # Shielded: a client that hangs up must not cut the create off between the server and
        # its Secrets' clean-up or owners (aiohttp cancels a handler whose client went).
        made = await asyncio.shield(self.make_server(gs, [secret] if secret is not None else []))
        await self.record(made, "create")
        if later:
            return ok({"status": "success", "info": f"Server [{views.uid_of(made)}] created, but "
                       "the server was not started (start it with /server/start)"})
        return ok(views.server_object(made, clock.now()))

    async def make_server(self, gs: dict, secrets_: list[dict]) -> dict:
        """The GameServer and its Secrets, made together: every Secret is created (or is a
        leftover of this server's own failed create, reused); a name held by anyone else's
        Secret is a 409 naming it, and nothing of theirs is written. When the cluster refuses
        the server, only the Secrets this request created go again."""
        name = gs["metadata"]["name"]
        if await self.call(self.kube.get, "GameServer", self.namespace, name) is not None:
            raise Conflict(f"server [{views.uid_of(gs)}] exists")
        names = [s["metadata"]["name"] for s in secrets_]
        if len(set(names)) < len(names):
            raise BadRequest(f"settings: two secret settings would share the Secret "
                             f"{next(n for n in names if names.count(n) > 1)}; name them apart")
        created: list[str] = []
        try:
            for secret in secrets_:
                if await self.put_secret(secret, name):
                    created.append(secret["metadata"]["name"])
            made = await self.call(self.kube.create, gs)
        except BaseException:
            for secret_name in created:  # nothing half-made: what this request made goes
                await self.call(self.kube.delete, "Secret", self.namespace, secret_name)
            raise
        owner = {"apiVersion": made["apiVersion"], "kind": "GameServer", "name": name,
                 "uid": made["metadata"]["uid"]}
        for secret in secrets_:  # the Secrets go with their server
            await self.call(self.kube.merge_patch, "Secret", self.namespace,
                            secret["metadata"]["name"], {"metadata": {"ownerReferences": [owner]}})
        return made

    async def put_secret(self, secret: dict, server: str, again: bool = True) -> bool:
        """Creates `secret` (True); or rewrites the API's own Secret of that name for this
        server, a leftover (False); else Conflict naming it. Nothing is read: the rewrite is
        a patch that tests the Secret's labels (the API has no right to read Secrets)."""
        name = secret["metadata"]["name"]
        try:
            await self.call(self.kube.create, secret)
            return True
        except ApiException as e:
            if e.status != 409:
                raise
        try:
            await self.call(self.kube.json_patch, "Secret", self.namespace, name,
                            views.reuse_ops(secret, server))
        except ApiException as e:
            if e.status == 404 and again:  # gone in between: made once more
                return await self.put_secret(secret, server, again=False)
            if e.status in (409, 422):  # a label test failed: not the API's for this server
                raise Conflict(views.secret_clash(name, server)) from None
            raise
        return False

    async def remove(self, gs: dict, eradicate: bool) -> web.Response:
        uid, name = views.uid_of(gs), gs["metadata"]["name"]
        if not views.created_here(gs):
            raise Conflict(f"server [{uid}] was not created through this API (its spec lives in "
                           "Git or was applied with kubectl): delete it there")
        keep = not eradicate
        if ((gs["spec"].get("storage") or {}).get("retainOnDelete", True)) != keep:
            await self.patch(gs, {"spec": {"storage": {"retainOnDelete": keep}}})
        await self.call(self.kube.delete, "GameServer", self.namespace, name)
        await self.record(gs, "eradicate" if eradicate else "destroy")
        if eradicate:
            info = (f"Server [{uid}] is being eradicated: a final backup, then its world is removed")
        else:
            info = f"Server [{uid}] destroyed; its world is kept (volume {name}-data)"
        return ok({"status": "success", "info": info})

    async def download(self, request: web.Request, gs: dict,
                       backup: str | None = None) -> web.StreamResponse:
        if self.downloads_running >= self.max_downloads:
            return web.json_response(
                {"status": "error", "info": f"{self.max_downloads} downloads are running, the "
                 "most this API serves at once; try again in a minute"},
                status=429, headers={**CORS_HEADERS, "Retry-After": "60"})
        slot = DownloadSlot(self)
        try:
            return await self.stream_newest_backup(request, gs, slot, backup)
        finally:
            slot.drop()

    async def runs_of(self, gs: dict) -> list[dict]:
        # By spec.gameServer: a backup made by hand need not carry the server's label.
        return [b for b in await self.call(self.kube.list, "GameServerBackup", self.namespace)
                if b["spec"].get("gameServer") == gs["metadata"]["name"]]

    async def good_backup(self, gs: dict, name: str | None) -> dict:
        """The server's Succeeded backup of that name (the newest with None), or NotFound."""
        runs = await self.runs_of(gs)
        if name is None:
            found = actions.newest_good_backup(runs)
        else:
            found = next((b for b in runs if b["metadata"]["name"] == name and
                          (b.get("status") or {}).get("phase") == bk.SUCCEEDED), None)
        if found is None:
            raise NotFound(f"server [{views.uid_of(gs)}] has no successful backup"
                           + (f" named {name[:80]}" if name else ""))
        return found

    async def stream_newest_backup(self, request: web.Request, gs: dict,
                                   slot: "DownloadSlot", backup: str | None = None
                                   ) -> web.StreamResponse:
        name = (await self.good_backup(gs, backup))["metadata"]["name"]
        with tempfile.TemporaryDirectory(prefix="peon-api-") as tmp:
            path = os.path.join(tmp, f"{name}.tar.gz")
            got = await slot.run(download.download, self.kube, self.namespace, name, path, None)
            # Streamed from here: the file goes with this folder when the handler returns.
            resp = web.StreamResponse(headers={
                **CORS_HEADERS, "Content-Type": "application/gzip",
                "Content-Length": str(got.size), "X-Checksum-Sha256": got.sha256,
                "Content-Disposition": f'attachment; filename="{name}.tar.gz"'})
            await resp.prepare(request)
            with open(path, "rb") as f:
                while chunk := await slot.run(f.read, 1 << 20):
                    await resp.write(chunk)
            await resp.write_eof()
            return resp

    # --- /api/1.0 (the seed's) ------------------------------------------------------------------

    async def servers_1_0(self, request: web.Request) -> web.Response:
        now = clock.now()
        return ok({"servers": [views.server_object_1_0(g, now) for g in await self.list_servers()]})

    async def get_1_0(self, request: web.Request) -> web.Response:
        return ok({"server": views.server_object_1_0(await self.server(request.match_info["uid"]),
                                                     clock.now())})

    async def create_1_0(self, request: web.Request) -> web.Response:
        from peon.shared.convert import PayloadError, check_payload, convert
        payload = await self.body(request)
        try:
            check_payload(payload)
            game = views.find_game(await self.games(), payload["game_uid"])
            docs = convert(payload, self.namespace, secret_env=True, game=game)
        except PayloadError as e:
            raise BadRequest(str(e)) from e
        gs = next(d for d in docs if d["kind"] == "GameServer")
        self.may_create(gs["metadata"]["name"], f"{payload['game_uid']}.{gs['metadata']['name']}")
        gs["metadata"]["labels"] = {views.CREATED_BY: views.API_NAME}
        secrets_ = [views.api_secret(d["metadata"]["name"], self.namespace, gs["metadata"]["name"],
                                     d["stringData"]) for d in docs if d["kind"] == "Secret"]
        made = await asyncio.shield(self.make_server(gs, secrets_))  # as in make()
        await self.record(made, "create")
        return ok({"server": views.server_object_1_0(made, clock.now())})

    async def server_action_1_0(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in ("start", "stop", "restart", "description", "destroy", "eradicate"):
            return web.json_response({"error": f"Incorrect action [{action}] provided"},
                                     status=404, headers=CORS_HEADERS)
        gs = await self.server(request.match_info["uid"])
        body = await self.body(request)
        now = clock.now()
        if action in ("destroy", "eradicate"):
            resp = await self.remove(gs, eradicate=action == "eradicate")
            return ok({"success": json.loads(resp.body)["info"]})
        gs = await getattr(self, action)(gs, body, now)
        await self.record(gs, action, body)
        return ok({"server": views.server_object_1_0(gs, now)})

    async def plans_1_0(self, request: web.Request) -> web.Response:
        return ok({"plans": [{"game_uid": p["game_uid"], "title": p["title"], "logo": "",
                              "source": p["plan_url"]} for p in views.plans(await self.games())]})

    # --- the web page (api/page/) and its data ---------------------------------------------------

    async def asset(self, request: web.Request) -> web.Response:
        name, ctype = ASSETS[request.path]
        body = page_file(name)
        tag = cards.etag(body)
        headers = {**PAGE_HEADERS, "ETag": tag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=headers)

    async def page_servers(self, request: web.Request) -> web.Response:
        """The page's poll: the servers' cards, with an ETag (an unchanged board is a 304 of
        no body) and the API's clock in X-Peon-Now (the page counts time left from it)."""
        now = clock.now()
        body = cards.dumps(cards.board(await self.list_servers(fresh=False), now, FRIEND.get()))
        tag = cards.etag(body)
        headers = {**PAGE_HEADERS, "ETag": tag, "Cache-Control": "no-cache",
                   "X-Peon-Now": clock.iso(now) or ""}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def page_backups(self, request: web.Request) -> web.Response:
        gs = await self.server(request.match_info["name"])
        return ok({"backups": cards.backups(await self.runs_of(gs), gs["metadata"]["name"])})

    async def page_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        gs = await self.server(request.match_info["name"])
        body, now = await self.body(request), clock.now()
        phase = (gs.get("status") or {}).get("phase")
        info = ""
        if action == "start":
            h = cards.hours(body)
            gs = await self.start(gs, {}, now, now + dt.timedelta(hours=h))
            await self.record(gs, "start", {"hours": f"{h:g}"})
        elif action == "extend":
            h = cards.hours(body)
            if phase not in ("Running", "Starting", "Pending"):
                raise Conflict(f"server [{views.uid_of(gs)}] is not running: start it instead")
            until = cards.extended_stop(gs, now, dt.timedelta(hours=h))
            gs = await self.start(gs, {}, now, until)
            await self.record(gs, "extend", {"hours": f"{h:g}", "until": clock.iso(until)})
        elif action == "stop":
            gs = await self.stop(gs, {}, now)
            await self.record(gs, "stop")
        elif action == "backup":
            info = await self.back_up(gs, now)
        else:  # restore
            name = body.get("backup")
            if not isinstance(name, str) or not name:
                raise BadRequest("backup: the name of the backup to restore is required")
            run = await self.good_backup(gs, name)
            made = await self.call(self.kube.create,
                                   actions.restore_object(gs, run["metadata"]["name"], now))
            info = made["metadata"]["name"]
            await self.record(gs, "restore", {"backup": run["metadata"]["name"]})
        return ok({"status": "success", "info": info,
                   "server": cards.card(gs, now, FRIEND.get())})

    async def page_download(self, request: web.Request) -> web.StreamResponse:
        gs = await self.server(request.match_info["name"])
        return await self.download(request, gs, request.match_info["backup"])

    async def page_logs(self, request: web.Request) -> web.Response:
        gs = await self.server(request.match_info["name"])
        lines = cards.log_lines(request.query)
        return ok({"lines": lines, "log": await self.logs(gs, lines)})

    async def openapi(self, request: web.Request) -> web.Response:
        from .openapi import document
        return ok(document(__version__))


class DownloadSlot:
    """One of the API's max_downloads slots, taken when made: held by its request and by the
    thread it runs, whichever ends last (a client gone does not stop an exec already
    streaming, so its thread keeps the slot). Each slot runs one thread at a time, so the
    downloads' pool of max_downloads threads never queues."""

    def __init__(self, api: Api):
        self.api, self.holders = api, 1
        api.downloads_running += 1

    def drop(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            self.api.downloads_running -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.holders += 1
        job = self.api.download_pool.submit(fn, *args)
        job.add_done_callback(lambda _: self._drop_from(loop))
        return await asyncio.wrap_future(job)

    def _drop_from(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self.drop)
        except RuntimeError:  # the loop closed first (the API is stopping): nothing to count
            pass


_PAGE: dict[str, bytes] = {}


def page_file(name: str) -> bytes:
    """A file of the page, shipped in the package (api/page/), read once."""
    if name not in _PAGE:
        _PAGE[name] = importlib.resources.files("peon.api").joinpath("page", name).read_bytes()
    return _PAGE[name]


def read_key(path: str | None) -> str:
    """The API key: from a file (a mounted Secret) or PEON_API_KEY; there is no default."""
    key = ""
    if path:
        with open(path) as f:
            key = f.read().strip()
    key = key or os.environ.get("PEON_API_KEY", "").strip()
    if len(key) < 16:
        raise SystemExit("peon-api: an API key of at least 16 characters is required "
                         "(--api-key-file FILE or PEON_API_KEY); there is no default key")
    return key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peon-api", description=__doc__.split("\n")[0])
    ap.add_argument("--namespace", "-n", required=True, help="the namespace of the servers")
    ap.add_argument("--api-key-file", help="a file holding the API key (else PEON_API_KEY)")
    ap.add_argument("--keys-file", metavar="FILE",
                    help="friends' keys (YAML: name -> {key, role, servers}), read again when "
                         "it changes; the API key stays an admin's")
    ap.add_argument("--wrong-keys", type=int, default=10, metavar="N",
                    help="wrong keys an address may send a minute; then 429 (default 10)")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-downloads", type=int, default=2, metavar="N",
                    help="backup downloads served at once; more get 429 (default 2)")
    ap.add_argument("--header-timeout", type=float, default=10, metavar="SECONDS",
                    help="a connection's time to send a request's headers, from its start or "
                         "its last answer; then it is closed (default 10)")
    ap.add_argument("--body-timeout", type=float, default=30, metavar="SECONDS",
                    help="a request's time to send its body; then 408 (default 30)")
    args = ap.parse_args(argv)
    if args.max_downloads < 1 or args.header_timeout <= 0 or args.body_timeout <= 0 \
            or args.wrong_keys < 1:
        ap.error("--max-downloads and --wrong-keys must be at least 1 and the timeouts more than 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = Api(Kube(agent=views.API_NAME), args.namespace, read_key(args.api_key_file),
              max_downloads=args.max_downloads, body_timeout=args.body_timeout,
              keys_file=args.keys_file, throttle=keys.Throttle(args.wrong_keys))
    web.run_app(api.app(), host=args.host, port=args.port, print=None,
                access_log_format='%a "%r" %s %b %Tfs', **server_options(args.header_timeout))
    return 0


def server_options(header_timeout: float) -> dict[str, Any]:
    """How aiohttp's server holds connections. Its keepalive_timeout runs from a connection's
    start (aiohttp 3.14.5 and later) and from each answer, and a request in progress stops
    it: so it is the time a client has to send complete headers, and a half-sent request is
    closed after it. Handlers of a client gone are cancelled (their downloads' threads keep
    their slot until they end)."""
    return {"keepalive_timeout": header_timeout, "handler_cancellation": True}


if __name__ == "__main__":
    sys.exit(main())
