"""Notifications: a server tells a Discord channel (a webhook) or any JSON webhook when it is up
(with its address), when it stops and why, when a backup failed and when an update is held.

`messages` decides from the status before and after a write (pure); `Notifier` sends on the
event loop, apart from the reconcile workers: `tell` only queues (a dead webhook never slows a
reconcile), each webhook gets its messages in order at most one a second, a refusal is retried
with back-off (honouring Discord's `retry_after` on a 429), and what cannot be sent is logged
and said once as a Warning Event, never with the URL: the URL comes from the Secret the
GameServer names (key `url`) and is a credential (a Discord webhook URL is its own token).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

UP, STOPPING, BACKUP_FAILED, UPDATE_HELD = "Up", "Stopping", "BackupFailed", "UpdateHeld"
EVENTS = (UP, STOPPING, BACKUP_FAILED, UPDATE_HELD)
COLOURS = {UP: 0x2ECC71, STOPPING: 0x95A5A6, BACKUP_FAILED: 0xE74C3C, UPDATE_HELD: 0xF39C12}
URL_KEY = "url"


@dataclass(frozen=True)
class Policy:
    """spec.notify: where to (a Secret's `url`), in which shape, about what."""
    secret: str
    format: str = "discord"  # discord | json
    events: tuple[str, ...] = EVENTS


def parse_policy(spec: Mapping[str, Any] | None) -> Policy | None:
    if not spec:
        return None
    return Policy(spec["secretRef"]["name"], spec.get("format", "discord"),
                  tuple(spec.get("events") or EVENTS))


@dataclass(frozen=True)
class Message:
    event: str
    text: str
    fields: tuple[tuple[str, str], ...] = ()


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def messages(server: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Message]:
    """What changed between two statuses that a person waiting on the server wants to hear."""
    old = old or {}
    out: list[Message] = []
    if new.get("phase") == "Running" and old.get("phase") != "Running":
        address = new.get("endpoint") or ""
        fields = (("Address", address),) if address else ()
        players = new.get("players") or {}
        if players.get("max") is not None:
            fields += (("Players", f"{players.get('online', 0)}/{players['max']}"),)
        out.append(Message(UP, f"{server} is up" + (f" at {address}" if address else ""), fields))
    was, now_ = (old.get("uptime") or {}), (new.get("uptime") or {})
    if was.get("running") is True and now_.get("running") is False:
        why = now_.get("message") or now_.get("reason") or "asked to"
        out.append(Message(STOPPING, f"{server} is stopping: {why}",
                           (("Why", now_.get("reason", "")),)))
    held, before = _condition(new, "Updated"), _condition(old, "Updated")
    if held.get("reason") == "BackupFailed" and before.get("reason") != "BackupFailed":
        out.append(Message(UPDATE_HELD, f"{server}'s update is held: {held.get('message', '')}"))
    return out


def backup_failed(server: str, backup: str, why: str) -> Message:
    return Message(BACKUP_FAILED, f"{server}: backup {backup} failed: {why}", (("Backup", backup),))


def body(fmt: str, namespace: str, server: str, m: Message) -> dict[str, Any]:
    """The webhook's JSON: Discord's execute-webhook shape (content and one embed, mentions
    off so a server name can never ping anyone), or a plain object for any other receiver."""
    if fmt == "json":
        return {"server": server, "namespace": namespace, "event": m.event, "message": m.text,
                **{k.lower(): v for k, v in m.fields}}
    return {"content": m.text[:2000], "username": "Peon", "allowed_mentions": {"parse": []},
            "embeds": [{"title": f"{server}: {m.event}", "description": m.text[:4096],
                        "color": COLOURS[m.event],
                        "fields": [{"name": k, "value": v[:1024], "inline": True}
                                   for k, v in m.fields if v],
                        "footer": {"text": f"{namespace}/{server}"}}]}


@dataclass
class Outgoing:
    namespace: str
    server: str
    secret: str
    payload: dict[str, Any]
    involved: dict[str, Any] = field(default_factory=dict)  # the GameServer, for a Warning


Post = Callable[[str, dict], Awaitable[tuple[int, Mapping[str, str], bytes]]]


async def http_post(url: str, payload: dict) -> tuple[int, Mapping[str, str], bytes]:
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.post(url, json=payload) as r:
            return r.status, dict(r.headers), await r.read()


class Notifier:
    """Sends Outgoing messages. `url_of(namespace, secret)` reads the URL (blocking: run in a
    thread); `warn(involved, message)` posts a Warning Event (blocking too)."""

    def __init__(self, url_of: Callable[[str, str], str | None],
                 warn: Callable[[dict, str], None], post: Post = http_post,
                 spacing: float = 1.0, retries: int = 4, backoff: float = 1.0,
                 capacity: int = 1000, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.url_of, self.warn, self.post = url_of, warn, post
        self.spacing, self.retries, self.backoff, self.sleep = spacing, retries, backoff, sleep
        self.capacity = capacity
        self._queue: asyncio.Queue[Outgoing] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, float] = {}
        self._warned: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.capacity)
        self._runner = self._loop.create_task(self.run())

    async def stop(self) -> None:
        for t in [self._runner, *self._tasks]:
            if t:
                t.cancel()
        await asyncio.gather(*(t for t in [self._runner, *self._tasks] if t), return_exceptions=True)

    def tell(self, out: Outgoing) -> None:
        """From any thread: queue and return at once."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._put, out)

    def _put(self, out: Outgoing) -> None:
        try:
            self._queue.put_nowait(out)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("notification for %s/%s dropped: %d waiting", out.namespace, out.server,
                        self.capacity)

    async def run(self) -> None:
        while True:
            out = await self._queue.get()
            task = asyncio.create_task(self.deliver(out))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def deliver(self, out: Outgoing) -> bool:
        """Sends one message, in order with the others to its webhook, spaced, with retries."""
        key = f"{out.namespace}/{out.secret}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                url = await asyncio.to_thread(self.url_of, out.namespace, out.secret)
            except Exception as e:  # the Secret cannot be read: said, not retried forever
                url, problem = None, f"cannot read Secret {out.secret}: {e}"
            else:
                problem = None if url else f"Secret {out.secret} has no `{URL_KEY}` key"
            if url and not url.startswith(("https://", "http://")):
                url, problem = None, f"Secret {out.secret}'s `{URL_KEY}` is not an http(s) URL"
            if url is None:
                return await self._failed(out, problem)
            last = ""
            for attempt in range(self.retries + 1):
                wait = self._last.get(key, 0.0) + self.spacing - time.monotonic()
                if wait > 0:
                    await self.sleep(wait)
                self._last[key] = time.monotonic()
                try:
                    status, headers, raw = await self.post(url, out.payload)
                except (OSError, asyncio.TimeoutError) as e:
                    status, headers, raw, last = 0, {}, b"", f"no answer ({type(e).__name__})"
                if 200 <= status < 300:
                    self.sent += 1
                    self._warned.pop((out.namespace, out.secret), None)
                    return True
                if status:
                    last = f"HTTP {status}"
                if status and status < 500 and status != 429:
                    break  # refused for what it is: retrying sends the same
                await self.sleep(self._retry_after(headers, raw) or self.backoff * 2 ** attempt)
            return await self._failed(out, f"the webhook answered {last}")

    @staticmethod
    def _retry_after(headers: Mapping[str, str], raw: bytes) -> float | None:
        for k, v in headers.items():
            if k.lower() == "retry-after":
                try:
                    return min(float(v), 60.0)
                except ValueError:
                    pass
        try:
            import json
            return min(float(json.loads(raw or b"{}").get("retry_after")), 60.0)
        except (ValueError, TypeError, AttributeError):
            return None

    async def _failed(self, out: Outgoing, problem: str) -> bool:
        log.warning("notification for %s/%s not sent: %s", out.namespace, out.server, problem)
        if self._warned.get((out.namespace, out.secret)) != problem and out.involved:
            self._warned[(out.namespace, out.secret)] = problem
            await asyncio.to_thread(self.warn, out.involved, f"notification not sent: {problem}")
        return False


def url_from_secret(secret: Mapping[str, Any] | None) -> str | None:
    data = (secret or {}).get("data") or {}
    if URL_KEY not in data:
        return None
    return base64.b64decode(data[URL_KEY]).decode().strip()
