"""The webhook POST against a hostile URL or answer, over real HTTP on loopback: a redirect (and
a loop of them), addresses the install does not allow, malformed URLs, a dropped connection, a
TLS mismatch and a huge answer. Each ends in one Warning without the URL, a log line without it,
and nothing escaping to the event loop. Only loopback is ever connected to: the refused
addresses other than loopback are judged by the pure check, never dialled."""
import asyncio
import logging
import tracemalloc

import pytest
from aiohttp import web
from fake_kube import FakeKube

from peon.shared import notify as nt

TOKEN = "very-secret-token"
LOOPBACK = nt.allowed_networks(["127.0.0.0/8"])


class Hooks:
    """A loopback webhook: /good answers 204, /redirect 302 to /good, /loop 302 to itself,
    /huge 500 with `huge` bytes of body (generated as sent), /drop a 500 cut short."""

    def __init__(self, huge: int = 0):
        self.hits: list[str] = []
        self.huge, self.sent = huge, 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path.split("/")[1])
        kind = self.hits[-1]
        if kind == "good":
            return web.Response(status=204)
        if kind == "redirect":
            raise web.HTTPFound(f"/good/{TOKEN}")
        if kind == "loop":
            raise web.HTTPFound(request.path)
        if kind == "drop":
            request.transport.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\nhalf")
            request.transport.close()
            return web.Response()
        r = web.StreamResponse(status=500)
        r.content_length = self.huge
        await r.prepare(request)
        chunk = b"x" * 65536
        try:
            while self.sent < self.huge:
                await r.write(chunk[:self.huge - self.sent])
                self.sent += min(len(chunk), self.huge - self.sent)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what it did not read, it never got
        return r

    async def __aenter__(self) -> "Hooks":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/{path}/{TOKEN}"


def out():
    return nt.Outgoing("games", "vikings", "hook", {"content": "vikings is up"},
                       involved={"metadata": {"name": "vikings"}})


async def send(url: str, allowed=LOOPBACK, times: int = 1, retries: int = 1):
    """Delivers `times` messages to `url`; returns (results, Warnings, the loop's unhandled)."""
    warnings, unhandled = [], []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))

    async def no_sleep(_):
        pass

    n = nt.Notifier(lambda ns, s: url, lambda obj, msg: warnings.append(msg),
                    post=nt.Webhooks(allowed).post, spacing=0, retries=retries, sleep=no_sleep)
    n.start()
    for _ in range(times):
        n.tell(out())
    for _ in range(1000):
        await asyncio.sleep(0.01)
        if n.sent + n.failed >= times and not n._tasks:
            break
    await n.stop()
    return n, warnings, unhandled


def assert_said_without_the_url(caplog, warnings, unhandled, url):
    assert unhandled == []  # no "Task exception was never retrieved"
    said = warnings + [r.getMessage() for r in caplog.records]
    assert said, "nothing was said"
    assert not [s for s in said if TOKEN in s or url in s]


@pytest.fixture(autouse=True)
def everything_logged(caplog):
    caplog.set_level(logging.DEBUG)


def test_a_redirect_is_not_followed_and_said_as_what_it_is(caplog):
    async def go():
        async with Hooks() as hooks:
            url = hooks.url("redirect")
            n, warnings, unhandled = await send(url, times=2)
            return hooks.hits, n, warnings, unhandled, url
    hits, n, warnings, unhandled, url = asyncio.run(go())
    assert hits == ["redirect", "redirect"]  # /good never reached, a 302 not retried
    assert warnings == ["notification not sent: the webhook answered HTTP 302"]  # once
    assert n.failed == 2
    assert_said_without_the_url(caplog, warnings, unhandled, url)


def test_a_redirect_loop_ends_in_one_warning(caplog):
    async def go():
        async with Hooks() as hooks:
            url = hooks.url("loop")
            return hooks.hits, *await send(url), url
    hits, n, warnings, unhandled, url = asyncio.run(go())
    assert hits == ["loop"]
    assert warnings == ["notification not sent: the webhook answered HTTP 302"]
    assert_said_without_the_url(caplog, warnings, unhandled, url)


@pytest.mark.parametrize("host, what", [
    ("127.0.0.1", "the webhook's address 127.0.0.1 is loopback"),
    ("localhost", "is loopback"),  # a name: judged by what it resolves to (127.0.0.1 or ::1)
    ("[::ffff:127.0.0.1]", "the webhook's address 127.0.0.1 is loopback"),
])
def test_a_refused_address_is_never_connected_to_unless_the_install_allows_it(caplog, host, what):
    async def go():
        async with Hooks() as hooks:
            url = hooks.url("good", host=host)
            refused = await send(url, allowed=())
            hits_refused = list(hooks.hits)
            allowed = await send(url, allowed=nt.allowed_networks(["127.0.0.0/8", "::1/128"]))
            return hits_refused, hooks.hits, refused, allowed, url
    hits_refused, hits, (n, warnings, unhandled), (ok, ok_warnings, _), url = asyncio.run(go())
    assert hits_refused == []  # refused before connecting
    (warning,) = warnings
    assert warning.startswith("notification not sent: refused: the webhook's address ")
    assert warning.endswith(" loopback, not allowed by this install") and what in warning
    assert_said_without_the_url(caplog, warnings, unhandled, url)
    assert hits == ["good"] and ok.sent == 1 and ok_warnings == []


def test_every_address_a_name_resolves_to_is_checked():
    class Resolver:  # a DNS answer with a public address and a private one (never dialled)
        async def resolve(self, host, port=0, family=0):
            return [{"hostname": host, "host": h, "port": port, "family": 2, "proto": 6,
                     "flags": 0} for h in ("203.0.113.9", "10.0.0.5")]

        async def close(self):
            pass

    async def go():
        r = nt.CheckedResolver(())
        r._inner = Resolver()
        with pytest.raises(nt.Refused) as e:
            await r.resolve("hook.example", 443)
        r.allowed = nt.allowed_networks(["10.0.0.0/8"])
        return e.value.reason, await r.resolve("hook.example", 443)
    reason, allowed = asyncio.run(go())
    assert reason == "the webhook's address 10.0.0.5 is private, not allowed by this install"
    assert [a["host"] for a in allowed] == ["203.0.113.9", "10.0.0.5"]


@pytest.mark.parametrize("address, what", [
    ("169.254.169.254", "a cloud metadata address"), ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"), ("169.254.10.1", "link-local"),
    ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "shared (carrier-grade NAT)"), ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"), ("127.5.5.5", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe",
                                                                 "a cloud metadata address"),
])
def test_the_refused_ranges(address, what):
    reason = nt.refusal(address)
    assert reason.startswith("the webhook's address ") and reason.endswith(
        f" is {what}, not allowed by this install")
    assert nt.refusal(address, nt.allowed_networks(["0.0.0.0/0", "::/0"])) is None


def test_public_addresses_pass():
    for address in ("162.159.135.232", "2606:4700::6810:1", "172.32.0.1", "100.128.0.1"):
        assert nt.refusal(address) is None


@pytest.mark.parametrize("url", [
    "http://[::1", "https://", "http://h:99999/x", "http://ä\udcff.com/x", "http://exa mple.com/x",
    "http://\x00/x", "gopher://127.0.0.1/x", "http:///x", f"http://[::1/{TOKEN}",
])
def test_a_malformed_url_is_said_once_and_nothing_escapes(caplog, url):
    n, warnings, unhandled = asyncio.run(send(url, times=2))
    assert n.failed == 2 and len(warnings) == 1
    assert warnings[0].startswith("notification not sent: Secret hook's `url` ")
    assert_said_without_the_url(caplog, warnings, unhandled, url)


def test_a_connection_dropped_mid_answer_is_retried_then_said(caplog):
    async def go():
        async with Hooks() as hooks:
            url = hooks.url("drop")
            return hooks.hits, *await send(url, retries=2), url
    hits, n, warnings, unhandled, url = asyncio.run(go())
    assert hits == ["drop"] * 3  # no answer: retried like a 5xx
    assert len(warnings) == 1 and warnings[0].startswith("notification not sent: the webhook answered")
    assert_said_without_the_url(caplog, warnings, unhandled, url)


def test_a_tls_failure_is_said(caplog):
    async def go():
        async with Hooks() as hooks:  # plain HTTP, asked for TLS
            url = hooks.url("good", scheme="https")
            return await send(url), url
    (n, warnings, unhandled), url = asyncio.run(go())
    assert n.failed == 1 and len(warnings) == 1 and "no answer (" in warnings[0]
    assert_said_without_the_url(caplog, warnings, unhandled, url)


def test_a_huge_answer_is_read_to_a_few_kib(caplog):
    """A 500 with 64 MB of body: the client reads 4 KiB and hangs up. tracemalloc's peak (this
    process, the server included) stays far below the body; read whole, it would exceed it."""
    async def go():
        async with Hooks(huge=64 * 2 ** 20) as hooks:
            url = hooks.url("huge")
            tracemalloc.start()
            try:
                result = await send(url, retries=0)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return hooks.sent, peak, result, url
    sent, peak, (n, warnings, unhandled), url = asyncio.run(go())
    assert warnings == ["notification not sent: the webhook answered HTTP 500"]
    assert peak < 8 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"
    assert sent < 32 * 2 ** 20  # the rest was never sent: the client stopped reading
    assert_said_without_the_url(caplog, warnings, unhandled, url)


def test_an_unforeseen_exception_is_said_without_the_url(caplog):
    """A post and a Warning that raise (their text quoting the URL): each is logged by its type,
    the message counted as failed once; the loop's handler never sees either."""
    url = f"https://discord.com/api/webhooks/1/{TOKEN}"

    async def post(u, payload):
        raise RuntimeError(f"cannot post to {u}")

    def warn(obj, msg):
        raise RuntimeError(f"cannot warn about {url}")

    async def go():
        unhandled = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: unhandled.append(c))
        n = nt.Notifier(lambda ns, s: url, warn, post=post, spacing=0, retries=0)
        n.start()
        n.tell(out())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if n.failed and not n._tasks:
                break
        await n.stop()
        return n, unhandled
    n, unhandled = asyncio.run(go())
    assert n.failed == 1 and unhandled == []
    logged = [r.getMessage() for r in caplog.records]
    assert "the Warning for games/vikings could not be posted: RuntimeError" in logged
    assert not [m for m in logged if TOKEN in m]


def test_the_install_s_allowance_reaches_the_default_sender(capsys):
    """--notify-allow-cidr (main.py) reaches the Notifier the controller builds (through
    handlers.Settings); a value that is not a CIDR stops the operator at its start, naming it."""
    from peon.operator import main
    from peon.operator.controller import Controller
    with pytest.raises(SystemExit):
        main.main(["--notify-allow-cidr", "10.0.0.0/33"])
    assert "not an IP network (CIDR): '10.0.0.0/33'" in capsys.readouterr().err

    async def go():
        async with Hooks() as hooks:
            warnings = []
            url_of = lambda ns, s: hooks.url("good")
            warn = lambda o, m: warnings.append(m)
            n = Controller(FakeKube(), workers=1).notifier  # the default post, as the operator's
            n.url_of, n.warn, n.spacing, n.retries = url_of, warn, 0, 0
            refused = await n.deliver(out())
            n = Controller(FakeKube(), workers=1,
                           notify_allowed=nt.allowed_networks(["127.0.0.1/32"])).notifier
            n.url_of, n.warn, n.spacing, n.retries = url_of, warn, 0, 0
            allowed = await n.deliver(out())
            return refused, allowed, warnings, hooks.hits
    refused, allowed, warnings, hits = asyncio.run(go())
    assert (refused, allowed, hits) == (False, True, ["good"])
    assert warnings == ["notification not sent: refused: the webhook's address 127.0.0.1 is "
                        "loopback, not allowed by this install"]
