"""The admin's console route (issue 28, item 5): `POST /api/v1/server/console/{uid}` with
`{"command": "say hi"}` runs one command in the server's console and answers what the game
said. Only the Game's Source RCON (Minecraft's is the same protocol), reached at the server's
Service's cluster IP on the console's port (read from the Service, so no cluster DNS is needed,
as the operator reaches it); an `exec` console runs in the server's pod, which the API's
account may not enter (its admission policy: download pods only), so it is refused and
`kubectl peon rcon` said instead. The password is read from the server's Secrets as its pod
reads them (shared/maintenance.console_password), which the API's account may do only with the
chart's `api.console: true` (RBAC cannot name a server's Secrets: that is every Secret of the
namespace; it also grants `get` on Services); it is never answered, logged or put in a message. Bounded: one line of at most
MAX_COMMAND characters, CONSOLE_SECONDS for the connection and the answer, the answer cut at
MAX_ANSWER characters.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from kubernetes.client.rest import ApiException

from peon.shared import maintenance as mt
from peon.shared.actions import BadRequest
from peon.shared.model import InvalidSpec, parse_game, parse_gameserver
from peon.shared.rcon import Rcon
from peon.shared.render import child_names
from . import keys
from .views import Conflict

MAX_COMMAND = 1000
MAX_ANSWER = 64 * 1024
CONSOLE_SECONDS = 5.0


def service_host(service: Mapping[str, Any] | None) -> str | None:
    """Where the API reaches a server's Service: its cluster IP (None while it has none)."""
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return ip if ip and ip != "None" else None


def command_of(body: Any) -> str:
    command = body.get("command") if isinstance(body, Mapping) else None
    if not isinstance(command, str) or not command.strip():
        raise BadRequest("command: the console command, a string, is required")
    if len(command) > MAX_COMMAND:
        raise BadRequest(f"command: at most {MAX_COMMAND} characters")
    if re.search(r"[\x00-\x1f\x7f]", command):
        raise BadRequest("command: one line, without control characters")
    return command.strip()


async def run(call: Callable[..., Any], kube: Any, namespace: str, gs: dict, body: Any) -> str:
    """What the game answered. Raises BadRequest, Conflict, keys.Forbidden, or RconError (the
    console did not answer or refused the password: the caller says it as a 502)."""
    command = command_of(body)
    phase = (gs.get("status") or {}).get("phase")
    if phase != "Running":
        raise Conflict(f"the server is not running (phase {phase or 'unknown'}): its console "
                       "answers only while it runs")
    game_obj = await call(kube.get, "Game", None, gs["spec"]["gameUid"])
    if game_obj is None:
        raise Conflict(f"no Game named {gs['spec']['gameUid']!r}")
    try:
        game, server = parse_game(game_obj), parse_gameserver(gs)
    except (InvalidSpec, ValueError, KeyError) as e:
        raise Conflict(f"the server or its Game is not valid ({type(e).__name__})") from None
    console = game.console
    if console is None:
        raise Conflict("the server's Game declares no console")
    if console.protocol != mt.RCON:
        raise Conflict("the Game's console runs a command in the server's pod, which the API "
                       "may not enter: use kubectl peon rcon")
    port = next((p for p in game.ports if p.name == console.port), None)
    if port is None:
        raise Conflict(f"the Game has no port {console.port!r} for its console")
    names = child_names(server.name)
    try:
        secrets = [await call(kube.get, "Secret", namespace, n)
                   for n in (names["Secret"], *server.secret_refs)]
    except ApiException as e:
        if e.status == 403:
            raise keys.Forbidden("the API may not read the server's Secrets, where its console's "
                                 "password is: the chart's api.console: true allows it") from None
        raise
    password = mt.console_password(console, game.env, secrets)
    if password is None:
        raise Conflict(f"no setting gives {console.password_key}, the console's password")
    try:
        service = await call(kube.get, "Service", namespace, names["Service"])
    except ApiException as e:
        if e.status == 403:
            raise keys.Forbidden("the API may not read the server's Service, where its console "
                                 "is reached: the chart's api.console: true allows it") from None
        raise
    host = service_host(service)
    if host is None:
        raise Conflict("the server's Service has no cluster address yet")
    async with Rcon(host, port.container_port, password, timeout=CONSOLE_SECONDS) as rcon:
        answer = await rcon.command(command)
    return answer[:MAX_ANSWER]
