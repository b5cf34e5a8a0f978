"""`kubectl peon rcon NAME "say hi"` (one command) and `kubectl peon console NAME` (a prompt):
the Game's console (issue 28), reached as its user may reach it.

Source RCON goes through a port-forward to the server's pod over the API server (the user's
`pods/portforward` right; nothing of the game's is exposed for it), with the password read
from the server's Secrets as its pod reads them (the user's `get` on them), never printed or
logged. An `exec` console runs its command in the server's container (`pods/exec`). Every
command is bounded in time and the answer in size (peon.shared.rcon).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Callable

from peon import LABEL_GAMESERVER
from peon.shared import maintenance as mt
from peon.shared.pods import log_pod

from .context import Ctx, Failure, Usage, get_server, namespace_of

SERVER_CONTAINER = "server"
TIMEOUT = 10.0


def resolve(ctx: Ctx, ns: str, name: str) -> tuple[Any, Any, str]:
    """(the GameServer parsed, its Game parsed, its running pod's name); Failure otherwise."""
    from peon.shared.model import InvalidSpec, parse_game, parse_gameserver
    body = get_server(ctx, ns, name)
    uid = (body.get("spec") or {}).get("gameUid", "")
    game_obj = ctx.kube.get("Game", None, uid)
    if game_obj is None:
        raise Failure(f"gameserver/{name}: no Game named {uid!r}")
    try:
        gs, game = parse_gameserver(body), parse_game(game_obj)
    except InvalidSpec as e:
        raise Failure(f"gameserver/{name}: {e.message}") from None
    if game.console is None:
        raise Failure(f"game {uid} declares no console (spec.console), so Peon cannot reach it")
    pod = log_pod(ctx.kube.list("Pod", ns, f"{LABEL_GAMESERVER}={name}"), name)
    if pod is None:
        phase = (body.get("status") or {}).get("phase") or "unknown"
        raise Failure(f"gameserver/{name} has no running pod (phase: {phase})")
    return gs, game, pod["metadata"]["name"]


def port_forward(ctx: Ctx, ns: str, pod: str, port: int):
    """A connected socket to `port` of the pod, through the API server (kubectl port-forward's
    way). Its end is closed with the forward."""
    from kubernetes.client import ApiClient, CoreV1Api
    from kubernetes.stream import portforward
    core = CoreV1Api(ApiClient(ctx.kube.api.configuration))
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod, ns, ports=str(port))
    sock = getattr(pf.socket(port), "_socket", None) or pf.socket(port)  # the socketpair's end
    sock.setblocking(False)
    return pf, sock


class Session:
    """One console: `ask(text)` returns the game's answer; closed with `close()`."""

    def __init__(self, ctx: Ctx, ns: str, name: str,
                 forward: Callable[..., Any] | None = None):
        self.ctx, self.ns, self.name = ctx, ns, name
        self.gs, self.game, self.pod = resolve(ctx, ns, name)
        self.console = self.game.console
        self._loop = asyncio.new_event_loop()
        self._rcon = self._pf = None
        if self.console.protocol == mt.RCON:
            from peon.shared.rcon import Rcon, RconError
            port = next((p.container_port for p in self.game.ports
                         if p.name == self.console.port), None)
            if port is None:
                raise Failure(f"game {self.game.uid}: console.port {self.console.port!r} is not "
                              "one of its ports")
            secrets = [ctx.kube.get("Secret", ns, n) for n in (f"{name}-env", *self.gs.secret_refs)]
            password = mt.console_password(self.console, self.game.env, secrets)
            if password is None:
                raise Failure(f"gameserver/{name}: no setting gives {self.console.password_key}, "
                              "the console's password")
            try:
                self._pf, sock = (forward or port_forward)(ctx, ns, self.pod, port)
                self._rcon = self._loop.run_until_complete(
                    Rcon(f"pod/{self.pod}", port, password, timeout=TIMEOUT, sock=sock).__aenter__())
            except RconError as e:
                self.close()
                raise Failure(str(e)) from None

    def ask(self, text: str) -> str:
        if not text.strip():
            raise Usage("a console command is some text")
        if self.console.protocol == mt.EXEC:
            result = self.ctx.kube.exec(self.ns, self.pod, SERVER_CONTAINER,
                                        [*self.console.command, text], TIMEOUT)
            if not result.ok:
                raise Failure(f"{' '.join(self.console.command)} failed: "
                              f"{result.error or result.output[-400:]}")
            return result.output
        from peon.shared.rcon import RconError
        try:
            return self._loop.run_until_complete(self._rcon.command(text))
        except (RconError, ValueError) as e:
            raise Failure(str(e)) from None

    def close(self) -> None:
        if self._rcon is not None:
            self._loop.run_until_complete(self._rcon.close())
            self._rcon = None
        if self._pf is not None:
            try:
                self._pf.close()
            except Exception:
                pass
            self._pf = None
        self._loop.close()


def print_answer(ctx: Ctx, answer: str) -> None:
    if answer:
        ctx.print(answer)


def cmd_rcon(args: argparse.Namespace, ctx: Ctx) -> int:
    ns = namespace_of(args, ctx)
    session = Session(ctx, ns, args.name)
    try:
        print_answer(ctx, session.ask(" ".join(args.command)))
    finally:
        session.close()
    return 0


def cmd_console(args: argparse.Namespace, ctx: Ctx, read: Callable[[str], str] = input) -> int:
    ns = namespace_of(args, ctx)
    session = Session(ctx, ns, args.name)
    interactive = sys.stdin.isatty() and ctx.out is sys.stdout
    if interactive:
        ctx.print(f"Connected to the console of {args.name} ({session.console.protocol}). "
                  "exit or Ctrl-D leaves.")
    try:
        while True:
            try:
                line = read(f"{args.name}> " if interactive else "")
            except EOFError:
                return 0
            line = line.strip()
            if line in ("exit", "quit"):
                return 0
            if not line:
                continue
            try:
                print_answer(ctx, session.ask(line))
            except Failure as e:
                print(f"error: {e}", file=ctx.err)
    finally:
        session.close()


def add_commands(sub: argparse._SubParsersAction, entry: Callable, ns_flags: Callable) -> None:
    p = sub.add_parser("rcon", help="run one command in a server's console (its Game's RCON or "
                       "console command)")
    p.add_argument("name", help="the GameServer")
    p.add_argument("command", nargs="+", help='the console command, such as "say hi"')
    ns_flags(p)
    p.set_defaults(fn=entry(cmd_rcon))
    p = sub.add_parser("console", help="type commands into a server's console (exit or Ctrl-D "
                       "leaves)")
    p.add_argument("name", help="the GameServer")
    ns_flags(p)
    p.set_defaults(fn=entry(cmd_console))
