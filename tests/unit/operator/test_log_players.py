"""The prober's log source (query protocol log): the container's log read through a pods/log
that behaves as the API server's (sinceTime, limitBytes, timestamps), incrementally, bounded,
and from nothing for a new container."""
import asyncio
import datetime as dt

from peon.operator import log_players
from peon.operator.prober import Prober, Target
from peon.shared.players import LogRules

RULES = LogRules(join=r"player (?P<player>\w+) joined", leave=r"player (?P<player>\w+) left")
T0 = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.timezone.utc)


class Kubelet:
    """Containers' logs as pods/log serves them."""

    def __init__(self):
        self.logs: dict[tuple, list[tuple[dt.datetime, str]]] = {}
        self.reads: list[tuple] = []

    def say(self, container_id, at_seconds, text):
        self.logs.setdefault(container_id, []).append((T0 + dt.timedelta(seconds=at_seconds), text))

    def read(self, cid):
        def read(ns, pod, container, since, limit, timeout):
            self.reads.append((ns, pod, container, since, limit, timeout))
            assert limit <= 256 * 1024 and timeout <= 10
            lines = self.logs.get(cid, [])
            if since:
                start = dt.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
                lines = [x for x in lines if x[0] >= start]
            text = "".join(f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {s}\n" for t, s in lines)
            return text.encode()[:limit]
        return read


def target(cid="containerd://a", interval=5.0):
    return Target("log", "srv-0", 0, interval, namespace="ns", container="server",
                  container_id=cid, rules=RULES)


def test_players_follow_the_log_read_from_where_it_was():
    async def scenario():
        kubelet, woken = Kubelet(), []
        current = {"cid": "containerd://a"}
        p = Prober(woken.append, read_log=lambda *a: kubelet.read(current["cid"])(*a))
        p.want(("ns", "srv"), target())
        kubelet.say("containerd://a", 0, "testgame: listening")
        await asyncio.gather(*p.ask_due(0.0))
        assert p.latest(("ns", "srv")).online == 0 and woken == [("ns", "srv")]
        assert kubelet.reads[-1][3] is None  # the first read: from the container's start
        kubelet.say("containerd://a", 1, "testgame: player alice joined (1 online)")
        kubelet.say("containerd://a", 1, "testgame: player bob joined (2 online)")
        await asyncio.gather(*p.ask_due(10.0))
        got = p.latest(("ns", "srv"))
        assert (got.online, got.names) == (2, ("alice", "bob")) and len(woken) == 2
        assert kubelet.reads[-1][3] == "2026-12-07T04:00:00Z"  # from the last line's second
        # alice leaves and carol comes between two asks: the same count, other names: news
        kubelet.say("containerd://a", 2, "testgame: player alice left (1 online)")
        kubelet.say("containerd://a", 2, "testgame: player carol joined (2 online)")
        await asyncio.gather(*p.ask_due(20.0))
        got = p.latest(("ns", "srv"))
        assert (got.online, got.names) == (2, ("bob", "carol")) and len(woken) == 3
        await asyncio.gather(*p.ask_due(30.0))  # nothing new: nobody woken
        assert len(woken) == 3 and p.latest(("ns", "srv")).online == 2
        # The container restarts: a new id, a new log, nobody on until it says so.
        current["cid"] = "containerd://b"
        kubelet.say("containerd://b", 50, "testgame: listening")
        p.want(("ns", "srv"), target("containerd://b"))
        assert p.latest(("ns", "srv")) is None
        await asyncio.gather(*p.ask_due(40.0))
        assert p.latest(("ns", "srv")).online == 0 and kubelet.reads[-1][3] is None
        assert len(p.logs._readings) == 1  # the old container's reading is gone
        p.forget(("ns", "srv"))
        assert p.logs._readings == {}
    asyncio.run(scenario())


def test_a_long_log_is_read_in_bounded_pieces_and_unknown_until_read_to_its_end(monkeypatch):
    monkeypatch.setattr(log_players, "LOG_CHUNK", 4096)
    async def scenario():
        kubelet = Kubelet()
        for i in range(3000):  # ~200 KB: 4 reads of 4 KiB an ask, so several asks
            kubelet.say("containerd://a", i // 100, f"noise {i} " + "x" * 20)
            if i % 300 == 0:
                kubelet.say("containerd://a", i // 100, f"player p{i} joined")
            if i % 600 == 0:
                kubelet.say("containerd://a", i // 100, f"player p{i} left")
        p = Prober(lambda k: None, read_log=kubelet.read("containerd://a"))
        p.want(("ns", "srv"), target())
        asks = 0
        while p.latest(("ns", "srv")) is None:
            await asyncio.gather(*p.ask_due(asks * 10.0))
            asks += 1
            assert asks < 200
            assert all(len(r) == 6 and r[4] == 4096 for r in kubelet.reads)
        assert asks > 5 and len(kubelet.reads) <= 4 * asks
        got = p.latest(("ns", "srv"))
        assert got.names == tuple(f"p{i}" for i in range(300, 3000, 600))
    asyncio.run(scenario())


def test_a_failing_read_is_unknown_never_nobody():
    async def scenario():
        def broken(*a):
            raise OSError("the API server is away")
        p = Prober(lambda k: None, read_log=broken)
        p.want(("ns", "srv"), target())
        await asyncio.gather(*p.ask_due(0.0))
        assert p.latest(("ns", "srv")) is None
    asyncio.run(scenario())


def test_sessions_ask_the_running_game_container_and_status_shows_count_and_names():
    from fixtures import game, gameserver
    from peon.operator.cache import Cache
    from peon.operator.sessions import Sessions
    from peon.shared.model import parse_game, parse_gameserver
    from peon.shared.players import Players

    g = game()
    g["spec"]["query"] = {"protocol": "log", "log": {"join": RULES.join, "leave": RULES.leave}}
    body = gameserver(uptime={"idle": {"after": "10m"}})
    gs, gm = parse_gameserver(body), parse_game(g)
    cache = Cache()
    p = Prober(lambda k: None, read_log=lambda *a: b"")
    sessions = Sessions(cache, p)
    sessions.decide(body, gs, gm)
    assert ("games", "odin") not in p._targets  # no pod yet: nothing to read

    def pod(name, running, cid, created):
        return {"metadata": {"name": name, "namespace": "games", "creationTimestamp": created,
                             "labels": {"peon.dev/gameserver": "odin"}},
                "status": {"phase": "Running" if running else "Pending", "containerStatuses": [
                    {"name": "server", "containerID": cid,
                     "state": {"running": {}} if running else {"waiting": {}}}]}}
    cache.put(cache.pods, ("games", "odin-1"), pod("odin-1", True, "containerd://a", "1"), False)
    sessions.decide(body, gs, gm)
    t = p._targets[("games", "odin")]
    assert (t.protocol, t.namespace, t.host, t.container, t.container_id, t.rules) == \
        ("log", "games", "odin-1", "server", "containerd://a", RULES)
    p._answers[("games", "odin")] = Players(2, 0, names=("alice", "bob"))
    _, _, players, _ = sessions.decide(body, gs, gm)
    assert players == {"online": 2, "max": 0, "names": ["alice", "bob"]}
    p._answers[("games", "odin")] = Players(0, 0)
    _, _, players, _ = sessions.decide(body, gs, gm)
    # the names written empty (a merge patch would keep names it omits), when the last left
    assert players["names"] == [] and players["online"] == 0


def test_the_api_reader_asks_pods_log_bounded_and_reads_no_more_than_its_limit():
    import http.server
    import threading
    import pytest
    from kubernetes.client import ApiClient, Configuration
    from kubernetes.client.rest import ApiException

    seen = []

    class PodsLog(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            if "/pods/gone/" in self.path:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"2026-12-07T04:00:00Z player x joined\n" * 10_000)  # more than asked

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), PodsLog)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = Configuration()
        cfg.host = f"http://127.0.0.1:{server.server_port}"
        cfg.api_key, cfg.api_key_prefix = {"authorization": "t0k"}, {"authorization": "Bearer"}

        class Kube:
            api = ApiClient(cfg)
        read = log_players.api_read_log(Kube())
        got = read("games", "odin-1", "server", "2026-12-07T04:00:00Z", 4096, 5.0)
        assert len(got) == 4096 and got.startswith(b"2026-12-07T04:00:00Z player x joined\n")
        assert seen[-1] == ("/api/v1/namespaces/games/pods/odin-1/log?container=server&timestamps=true"
                            "&limitBytes=4096&sinceTime=2026-12-07T04%3A00%3A00Z", "Bearer t0k")
        assert len(read("games", "odin-1", "server", None, 10, 5.0)) == 10 and \
            "sinceTime" not in seen[-1][0]
        with pytest.raises(ApiException) as e:
            read("games", "gone", "server", None, 10, 5.0)
        assert e.value.status == 404
    finally:
        server.shutdown()
