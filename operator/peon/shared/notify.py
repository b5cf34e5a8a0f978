"""Notifications: a server tells a Discord channel (a webhook) or any JSON webhook when it is up
(with its address), when it stops and why, when a backup failed and when an update is held.

`messages` decides from the status before and after a write (pure); `Notifier` sends on the
event loop, apart from the reconcile workers: `tell` only queues (a dead webhook never slows a
reconcile), each webhook gets its messages in order at most one a second, a refusal is retried
with back-off (honouring Discord's `retry_after` on a 429), and what cannot be sent is logged
and said once as a Warning Event, never with the URL: the URL comes from the Secret the
GameServer names (key `url`) and is a credential (a Discord webhook URL is its own token).

Whoever may create a GameServer chooses that URL, so the POST is hardened against it (`Webhooks`):
no redirects followed, no address of the operator's own network position (loopback, link-local
and the cloud's metadata, private and shared ranges, multicast, unspecified) unless the install
allows it (`--notify-allow-cidr`), every address a name resolves to checked and only those
connected to, the answer read to 4 KiB at most within a total timeout, and any failure, however
odd, said once without the URL.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

import aiohttp
import aiohttp.abc
from yarl import URL

from . import clock

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
        knocker = woken_by(new)
        if knocker:
            fields += (("Woken by", knocker),)
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


def woken_by(status: Mapping[str, Any]) -> str | None:
    """Who woke the server by connecting (the wake gate's knock that started this session):
    the player's name (Minecraft) or the address; None when the session began otherwise."""
    up, knock = status.get("uptime") or {}, status.get("lastKnock") or {}
    if up.get("reason") != "WokenUp" or knock.get("outcome") != "woke":
        return None
    began, at = clock.parse(up.get("sessionStart")), clock.parse(knock.get("at"))
    if began is None or at is None or abs((began - at).total_seconds()) > 120:
        return None
    return str(knock.get("player") or knock.get("address") or "")[:64] or None


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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where a webhook may not go unless the install allows it: the operator's own network position.
# The most specific name first (the metadata addresses sit inside wider ranges).
REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), what) for n, what in (
    ("169.254.169.254/32", "a cloud metadata address"),   # AWS, GCP, Azure, OpenStack, ...
    ("fd00:ec2::254/128", "a cloud metadata address"),    # AWS over IPv6
    ("100.100.100.200/32", "a cloud metadata address"),   # Alibaba
    ("168.63.129.16/32", "a cloud metadata address"),     # Azure's wire server
    ("0.0.0.0/8", "unspecified"), ("::/128", "unspecified"),
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
    ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"), ("fc00::/7", "unique local"),
    ("224.0.0.0/4", "multicast"), ("ff00::/8", "multicast"),
    ("240.0.0.0/4", "reserved"),
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
ANSWER_LIMIT = 4096  # bytes of a webhook's answer read: Discord's retry_after JSON fits
TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5, sock_connect=5, sock_read=5)
HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.?)+$", re.I)


class Refused(Exception):
    """The webhook's address is not one this install lets the operator send to."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadURL(ValueError):
    """The Secret's `url` is not a usable http(s) URL (the reason never quotes it)."""


def allowed_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`--notify-allow-cidr` values; a ValueError names the one that is not a CIDR."""
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network (CIDR): {c!r}") from None
    return tuple(out)


def _reached(ip: IPAddress) -> IPAddress:
    """An IPv4 address dressed as IPv6 (mapped, or NAT64's well-known prefix) is judged as the
    IPv4 address it reaches."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def refusal(address: str, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a webhook may not be sent to `address` (an IP, as resolved); None when it may."""
    ip = _reached(ipaddress.ip_address(address))
    if any(ip.version == n.version and ip in n for n in allowed):
        return None
    for net, what in REFUSED:
        if ip.version == net.version and ip in net:
            return f"the webhook's address {ip} is {what}, not allowed by this install"
    return None


def webhook_url(url: str) -> URL:
    """The Secret's `url`, parsed, or BadURL with a reason that does not quote it."""
    try:
        target = URL(url)
        host, port = target.host, target.port
    except (ValueError, UnicodeError, TypeError) as e:
        raise BadURL(f"is not a valid URL ({type(e).__name__})") from None
    if target.scheme not in ("http", "https"):
        raise BadURL("is not an http(s) URL")
    if not host or port is None:
        raise BadURL("has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME.match(target.raw_host or ""):
            raise BadURL("has no valid host name") from None
    return target


class CheckedResolver(aiohttp.abc.AbstractResolver):
    """Resolves as aiohttp would, then refuses the name if ANY of its addresses is refused;
    aiohttp connects only to the addresses returned, the very ones checked (no second lookup
    a rebinding DNS server could answer differently)."""

    def __init__(self, allowed: Sequence[IPNetwork]):
        self.allowed = allowed
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[aiohttp.abc.ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for r in found:
            why = refusal(r["host"].split("%")[0], self.allowed)
            if why:
                raise Refused(why)
        return found

    async def close(self) -> None:
        await self._inner.close()


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of an answer; the rest is never read (the connection is closed)."""
    got = b""
    while len(got) < limit:
        chunk = await stream.read(limit - len(got))
        if not chunk:
            break
        got += chunk
    return got


class Webhooks:
    """The POST to a webhook, as hostile as its URL may be: see the module's docstring."""

    def __init__(self, allowed: Sequence[IPNetwork] = ()):
        self.allowed = tuple(allowed)

    async def post(self, url: str, payload: dict) -> tuple[int, Mapping[str, str], bytes]:
        target = webhook_url(url)
        try:
            why = refusal(target.host, self.allowed)  # an IP literal: no resolver asked
        except ValueError:
            why = None  # a name: the resolver checks what it resolves to
        if why:
            raise Refused(why)
        connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.allowed),
                                         use_dns_cache=False, force_close=True)
        # No decompression: a small gzip answer must not become a large one in memory.
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT,
                                         auto_decompress=False) as s:
            async with s.post(target, json=payload, allow_redirects=False,
                              headers={"Accept-Encoding": "identity"}) as r:
                raw = await read_at_most(r.content, ANSWER_LIMIT)
                return r.status, dict(r.headers), raw


class Notifier:
    """Sends Outgoing messages. `url_of(namespace, secret)` reads the URL (blocking: run in a
    thread); `warn(involved, message)` posts a Warning Event (blocking too)."""

    def __init__(self, url_of: Callable[[str, str], str | None],
                 warn: Callable[[dict, str], None], post: Post | None = None,
                 allowed: tuple[IPNetwork, ...] = (),
                 spacing: float = 1.0, retries: int = 4, backoff: float = 1.0,
                 capacity: int = 1000, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        # `allowed`: the networks the install lets webhooks reach (--notify-allow-cidr).
        self.url_of, self.warn = url_of, warn
        self.post = post or Webhooks(allowed).post
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
        self.failed = 0  # messages not sent (each said in the log, a Warning once per problem)

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
            task = asyncio.create_task(self.deliver_safely(out))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        """The last resort: no task's exception is left unretrieved (asyncio would log it, with
        whatever it says, the URL included)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failed += 1
            log.error("a notification task failed: %s", type(task.exception()).__name__)

    async def deliver_safely(self, out: Outgoing) -> bool:
        """deliver, with anything it did not foresee said once too (by its type: an exception's
        text may quote the URL)."""
        try:
            return await self.deliver(out)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return await self._failed(out, f"unexpected error ({type(e).__name__})")

    async def deliver(self, out: Outgoing) -> bool:
        """Sends one message, in order with the others to its webhook, spaced, with retries."""
        key = f"{out.namespace}/{out.secret}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                url = await asyncio.to_thread(self.url_of, out.namespace, out.secret)
            except Exception as e:  # the Secret cannot be read: said, not retried forever
                url, problem = None, f"cannot read Secret {out.secret}: {type(e).__name__}"
            else:
                problem = None if url else f"Secret {out.secret} has no `{URL_KEY}` key"
            if url:
                try:
                    webhook_url(url)
                except BadURL as e:
                    url, problem = None, f"Secret {out.secret}'s `{URL_KEY}` {e}"
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
                except Refused as e:  # the same address next time: not retried
                    return await self._failed(out, f"refused: {e.reason}")
                except BadURL as e:
                    return await self._failed(out, f"Secret {out.secret}'s `{URL_KEY}` {e}")
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # refused, reset, timed out, TLS, garbled: by type only
                    status, headers, raw, last = 0, {}, b"", f"no answer ({type(e).__name__})"
                if 200 <= status < 300:
                    self.sent += 1
                    self._warned.pop((out.namespace, out.secret), None)
                    return True
                if status:
                    last = f"HTTP {status}"
                if status and status < 500 and status != 429:
                    break  # refused for what it is (a redirect too, never followed): retrying sends the same
                await self.sleep(self._retry_after(headers, raw) or self.backoff * 2 ** attempt)
            return await self._failed(out, f"the webhook answered {last}")

    @staticmethod
    def _retry_after(headers: Mapping[str, str], raw: bytes) -> float | None:
        """Seconds the webhook asks to wait (a Retry-After header, or Discord's JSON), 0-60."""
        import json
        import math
        told: Any = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        if told is None:
            try:
                told = json.loads(raw or b"{}").get("retry_after")
            except (ValueError, TypeError, AttributeError, RecursionError):
                return None
        try:
            seconds = float(told)
        except (ValueError, TypeError, OverflowError):
            return None
        return min(max(seconds, 0.0), 60.0) if math.isfinite(seconds) else None

    async def _failed(self, out: Outgoing, problem: str) -> bool:
        self.failed += 1
        log.warning("notification for %s/%s not sent: %s", out.namespace, out.server, problem)
        if self._warned.get((out.namespace, out.secret)) != problem and out.involved:
            self._warned[(out.namespace, out.secret)] = problem
            try:
                await asyncio.to_thread(self.warn, out.involved, f"notification not sent: {problem}")
            except Exception as e:  # the Event cannot be posted: logged once, counted once
                log.warning("the Warning for %s/%s could not be posted: %s", out.namespace,
                            out.server, type(e).__name__)
        return False


def url_from_secret(secret: Mapping[str, Any] | None) -> str | None:
    data = (secret or {}).get("data") or {}
    if URL_KEY not in data:
        return None
    return base64.b64decode(data[URL_KEY]).decode().strip()
