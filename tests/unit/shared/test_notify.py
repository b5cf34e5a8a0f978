"""Notifications: what a status change says (pure), the webhook bodies, and the sender's
order, spacing, retries and failures through a fake webhook (no network, no real sleeping)."""
import asyncio
import json
import threading

from peon.shared import notify as nt

URL = "https://discord.com/api/webhooks/123/very-secret-token"


def test_a_server_coming_up_says_where_and_a_stop_says_why():
    old = {"phase": "Starting", "uptime": {"running": True, "reason": "WokenUp"}}
    new = {"phase": "Running", "endpoint": "203.0.113.7:2456", "players": {"online": 0, "max": 10},
           "uptime": {"running": True, "reason": "WokenUp"}}
    (up,) = nt.messages("vikings", old, new)
    assert up.event == nt.UP and up.text == "vikings is up at 203.0.113.7:2456"
    assert dict(up.fields) == {"Address": "203.0.113.7:2456", "Players": "0/10"}
    stopping = {**new, "uptime": {"running": False, "reason": "Idle", "message": "nobody was on"}}
    (down,) = nt.messages("vikings", new, stopping)
    assert (down.event, down.text) == (nt.STOPPING, "vikings is stopping: nobody was on")
    assert nt.messages("vikings", new, new) == []  # nothing changed, nothing said
    held = {**new, "conditions": [{"type": "Updated", "status": "False", "reason": "BackupFailed",
                                   "message": "the backup before v2 failed"}]}
    (h,) = nt.messages("vikings", new, held)
    assert h.event == nt.UPDATE_HELD and "the backup before v2 failed" in h.text
    assert nt.messages("vikings", held, held) == []


def test_discord_and_json_bodies():
    m = nt.Message(nt.UP, "vikings is up at 203.0.113.7:2456", (("Address", "203.0.113.7:2456"),))
    d = nt.body("discord", "games", "vikings", m)
    assert d["content"] == m.text and d["allowed_mentions"] == {"parse": []}  # pings no one
    (embed,) = d["embeds"]
    assert embed["title"] == "vikings: Up" and embed["fields"][0] == {
        "name": "Address", "value": "203.0.113.7:2456", "inline": True}
    assert nt.body("json", "games", "vikings", m) == {
        "server": "vikings", "namespace": "games", "event": "Up", "message": m.text,
        "address": "203.0.113.7:2456"}
    assert nt.parse_policy({"secretRef": {"name": "hook"}}) == nt.Policy("hook", "discord", nt.EVENTS)
    assert nt.parse_policy(None) is None


class Webhook:
    """Answers with the given statuses in turn (then 204), recording what it got."""

    def __init__(self, *answers):
        self.answers, self.got = list(answers), []

    async def post(self, url, payload):
        self.got.append((url, payload))
        status, headers, raw = self.answers.pop(0) if self.answers else (204, {}, b"")
        if status == 0:
            raise OSError("connection refused")
        return status, headers, raw


def run(webhook, outs, url=URL):
    """Delivers `outs` through a Notifier; returns (results, sleeps, warnings)."""
    sleeps, warnings = [], []

    async def sleep(s):
        sleeps.append(s)

    async def go():
        n = nt.Notifier(lambda ns, secret: url, lambda obj, msg: warnings.append(msg),
                        post=webhook.post, spacing=1.0, retries=3, backoff=1.0, sleep=sleep)
        return [await n.deliver(o) for o in outs], n
    results, n = asyncio.run(go())
    return results, sleeps, warnings


def out(i=0):
    return nt.Outgoing("games", "vikings", "hook", {"content": f"m{i}"},
                       involved={"metadata": {"name": "vikings"}})


def test_a_refusal_is_retried_with_back_off_and_a_429_waits_as_told():
    hook = Webhook((500, {}, b""), (0, {}, b""), (429, {}, b'{"retry_after": 2.5}'))
    results, sleeps, warnings = run(hook, [out()])
    assert results == [True] and len(hook.got) == 4 and warnings == []
    assert [s for s in sleeps if s >= 1.0][:3] == [1.0, 2.0, 2.5]  # back-off, then Discord's wait


def test_what_cannot_be_sent_is_said_once_without_the_url():
    hook = Webhook(*[(404, {}, b"Unknown Webhook")] * 5)
    results, sleeps, warnings = run(hook, [out(0), out(1)])
    assert results == [False, False] and len(hook.got) == 2  # a 404 is not retried
    assert warnings == ["notification not sent: the webhook answered HTTP 404"]  # once
    assert not any("very-secret-token" in w for w in warnings)
    hook = Webhook(*[(503, {}, b"")] * 10)
    results, _, warnings = run(hook, [out()])
    assert results == [False] and len(hook.got) == 4  # the first try and three retries
    results, _, warnings = run(Webhook(), [out()], url=None)
    assert warnings == ["notification not sent: Secret hook has no `url` key"]
    results, _, warnings = run(Webhook(), [out()], url="ftp://example.org/x")
    assert results == [False] and "is not an http(s) URL" in warnings[0]


def test_one_webhook_gets_its_messages_in_order_and_spaced():
    hook = Webhook()
    results, sleeps, _ = run(hook, [out(i) for i in range(3)])
    assert [p["content"] for _, p in hook.got] == ["m0", "m1", "m2"]
    assert len([s for s in sleeps if 0 < s <= 1.0]) == 2  # at most one a second


def test_tell_from_a_reconcile_thread_never_waits_on_the_webhook():
    hook = Webhook()
    slow = asyncio.Event()

    async def post(url, payload):  # a webhook that never answers until told
        await slow.wait()
        return await hook.post(url, payload)

    async def go():
        n = nt.Notifier(lambda ns, s: URL, lambda o, m: None, post=post, spacing=0)
        n.start()
        t = threading.Thread(target=lambda: [n.tell(out(i)) for i in range(3)])
        t.start()
        t.join(1)  # tell returned at once, though nothing is delivered yet
        assert not t.is_alive()
        await asyncio.sleep(0.05)
        assert hook.got == []
        slow.set()
        for _ in range(100):
            if n.sent == 3:
                break
            await asyncio.sleep(0.01)
        await n.stop()
        return n.sent
    assert asyncio.run(go()) == 3
    assert [json.dumps(p) for _, p in hook.got] == [json.dumps({"content": f"m{i}"}) for i in range(3)]
