"""The PEON API fuzzed over every route, against the in-memory cluster: bodies of every route
with wrong types put at every level, nesting far past any body of PEON's, numbers no float or
Kubernetes quantity holds (1e400, 5,000 digits), odd Unicode (lone surrogates escaped in JSON,
NUL, right-to-left marks, emoji) in keys, values and path parameters. No answer is a 5xx, and
none carries a traceback.

Deterministic by default (the same examples every run); PEON_API_FUZZ_SEED=<n> explores
others and PEON_API_FUZZ_EXAMPLES sets how many (at least 1,000 by default)."""
from __future__ import annotations

import asyncio
import collections
import json
import os
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, seed, settings, strategies as st

from test_api import KEY, cluster
from peon.api.server import Api

EXAMPLES = int(os.environ.get("PEON_API_FUZZ_EXAMPLES", "1200"))
SEED = os.environ.get("PEON_API_FUZZ_SEED")
TALLY: collections.Counter = collections.Counter()


class Raw(str):
    """JSON text put into a body as it is (what json.dumps cannot write: 5,000 digits)."""


def to_json(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


ODD_TEXT = ["\ud800", "a\udfffb", "\x00", "nul\x00in", "\u202egnp.exe", "\u200f\u200e", "🎮🐉",
            "e\u0301", "Ｆｕｌｌ", "a" * 3000, "", " ", "../../etc/passwd", "${HOME}", "$(id)",
            "%00", "\\", "\"", "\n\r\t", "valheim.odin", "True", "null"]
odd_text = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=12),
                     st.text(alphabet=st.characters(codec=None, categories=("Cs", "Cc", "Cf", "So")),
                             max_size=6))
deep = st.sampled_from([17, 100, 1500, 60000]).flatmap(lambda n: st.sampled_from([
    Raw("[" * n + "]" * n), Raw('{"a":' * n + "1" + "}" * n), Raw("[" * n + "1" + "]" * n)]))
odd_number = st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("9" * 5000), Raw("-" + "1" * 4301),
                              Raw("1" * 4300), Raw("NaN"), Raw("Infinity"), Raw("-0"), Raw("1E-400"),
                              2 ** 63, -(2 ** 63) - 1, 0.1, -1, 0, 10 ** 30])
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), odd_text,
                   odd_number)
json_value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)), max_leaves=8)
odd = st.one_of(scalar, json_value, deep, st.builds(dict), st.builds(list))

VARIABLES = ["PASSWORD", "SERVER_NAME", "WORLD_NAME", "SERVER_PASS", "bad key", "1X", "Κλειδί"]
V1_BODIES = {
    "create": lambda: {"game_uid": "valheim", "warcamp": "fuzz", "PASSWORD": "hunter22",
                       "SERVER_NAME": "x", "WORLD_NAME": "y", "description": "d",
                       "start_later": False, "interval": "5h"},
    "start": lambda: {"interval": "5h", "epoch_time": "2000000000"},
    "stop": lambda: {"interval": "20m"},
    "restart": dict,
    "update": lambda: {"mode": "full"},
    "description": lambda: {"description": "Saturdays"},
    "save": dict,
    "destroy": lambda: {"eradicate": False},
    "eradicate": lambda: {"eradicate": True},
    "get": dict, "stats": dict, "logs": dict,
}
V1_METHODS = {"create": "PUT", "get": "GET", "stats": "GET", "destroy": "DELETE",
              "eradicate": "DELETE", "logs": "GET"}
# The web page's routes (api/page/ calls them) and PEON's web UI's create.
PAGE_BODIES = {"start": lambda: {"hours": 2}, "extend": lambda: {"hours": 0.5}, "stop": dict,
               "backup": dict, "restore": lambda: {"backup": "odin-b1"}}
LINES = ["5", "0", "-1", "2001", "1e3", "x", "", "9" * 30, "%00", "１２"]


def payload_1_0() -> dict:
    return {"game_uid": "valheim", "servername": "fuzz", "description": "d", "settings": [
        {"type": "env", "name": "env", "content": {"PASSWORD": "hunter22", "WORLD": "w"}},
        {"type": "json", "name": "config.json", "content": {"k": ["v", 1]}},
        {"type": "txt", "name": "motd.txt", "content": "hi"}]}


UIDS = ["valheim.odin", "valheim.fuzz", "valhiem.odin", "minecraft.odin", "valheim", ".", "..",
        "valheim.", ".odin", "x.y.z", "valheim.Odin", "valheim.a%2Fb", "valheim.%00",
        "valheim.%ED%A0%80", "valheim.%E2%80%AE", "%F0%9F%8E%AE.%F0%9F%90%89", "valheim." + "o" * 300,
        "valheim.odin%20", "valheim.odin?x=1"]
uid = st.one_of(st.sampled_from(UIDS), st.text(max_size=20).map(lambda t: quote(t, safe="")))


def paths_of(value, here=()):
    """Every place in a body: the root, each key's value, each item."""
    yield here
    if isinstance(value, dict) and not isinstance(value, Raw):
        for k, v in value.items():
            yield from paths_of(v, here + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_of(v, here + (i,))


def put(body, where, value):
    if not where:
        return value
    parent = body
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = value
    return body


@st.composite
def requests(draw):
    """(method, path, body bytes): a route, its body with wrong values put at some places."""
    route = draw(st.sampled_from(["v1", "v1", "v1", "1.0 create", "1.0 action", "1.0 get", "plan",
                                  "lists", "raw", "page", "page", "page get", "v1 post create"]))
    if route == "raw":
        return (draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"])),
                draw(st.sampled_from(["/api/v1/server/create/valheim.fuzz", "/api/1.0/servers",
                                      "/api/v1/server/start/valheim.odin"])),
                draw(st.one_of(st.binary(max_size=80), st.sampled_from(
                    [b"\xff\xfe{", b'{"a": "\xed\xa0\x80"}', b"\x00", b"{}" * 1000]))))
    if route == "lists":
        method, path = draw(st.sampled_from([
            ("GET", "/api/v1/servers"), ("PUT", "/api/v1/servers"), ("GET", "/api/v1/plans"),
            ("PUT", "/api/v1/plans"), ("GET", "/api/1.0/servers"), ("GET", "/api/1.0/plans"),
            ("PUT", "/api/1.0/plans"), ("GET", "/api/v1/orchestrator"), ("GET", "/openapi.json")]))
        body = {}
    elif route == "v1":
        action = draw(st.sampled_from(sorted(V1_BODIES)))
        method = V1_METHODS.get(action, "PUT")
        if draw(st.integers(0, 9)) == 0:
            method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]))
        path = f"/api/v1/server/{action}/{draw(uid)}"
        body = V1_BODIES[action]()
        if action == "create":
            for k in draw(st.lists(st.sampled_from(VARIABLES), max_size=2)):
                body[k] = "v"
    elif route == "page":
        action = draw(st.sampled_from(sorted(PAGE_BODIES)))
        method = "POST" if draw(st.integers(0, 9)) else draw(st.sampled_from(["GET", "PUT", "DELETE"]))
        path, body = f"/page/{action}/{draw(uid)}", PAGE_BODIES[action]()
    elif route == "page get":
        method = "GET"
        path = draw(st.sampled_from(["/page/servers", f"/page/backups/{draw(uid)}",
                                     f"/page/logs/{draw(uid)}?lines={draw(st.sampled_from(LINES))}",
                                     f"/api/v1/server/logs/{draw(uid)}?lines={draw(st.sampled_from(LINES))}",
                                     f"/page/download/{draw(uid)}/{draw(uid)}", "/", "/page/app.js"]))
        body = {}
    elif route == "v1 post create":
        method, path = "POST", "/api/v1/server/create"
        body = {"game_uid": "valheim", "servername": "fuzz", "PASSWORD": "hunter22",
                "description": "d", "interval": "5h"}
    elif route == "1.0 create":
        method, path, body = "POST", "/api/1.0/servers", payload_1_0()
    elif route == "1.0 action":
        action = draw(st.sampled_from(["start", "stop", "restart", "description", "destroy",
                                       "eradicate", "nope"]))
        method = draw(st.sampled_from(["PUT", "POST", "DELETE", "GET"]))
        path, body = f"/api/1.0/server/{action}/{draw(uid)}", {"interval": "1h", "description": "d"}
    elif route == "1.0 get":
        method, path, body = "GET", f"/api/1.0/server/get/{draw(uid)}", {}
    else:
        method, path, body = "GET", f"/api/v1/plan/{draw(uid)}", {}
    # Wrong values at every level: the root itself, a field, a setting, a setting's content.
    places = list(paths_of(body))
    for where in draw(st.lists(st.sampled_from(places), max_size=3)):
        try:
            body = put(body, where, draw(odd))
        except (KeyError, IndexError, TypeError):  # an earlier change took that place away
            pass
    return method, path, to_json(body).encode("utf-8", "surrogatepass")


def fuzz_settings(f):
    s = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much])
    f = s(f)
    return seed(int(SEED))(f) if SEED else f


def test_no_request_makes_a_5xx(capsys):
    loop = asyncio.new_event_loop()
    kube = cluster()
    # A backup to restore and a pod to read a log from (never a download: no uid drawn names
    # the backup, and a fake pod never runs).
    from test_api_page import server_pod, succeeded_backup
    succeeded_backup(kube, "odin-b1")
    server_pod(kube)
    fresh = dict(kube.objects)

    async def start():
        c = TestClient(TestServer(Api(kube, "games", KEY,
                                      read_log=lambda ns, pod, lines: "a log\n").app()))
        await c.start_server()
        return c
    client = loop.run_until_complete(start())

    async def send(method, path, body):
        resp = await client.request(method, path, data=body, headers={
            "X-Api-Key": KEY, "Content-Type": "application/json"})
        return resp.status, await resp.text()

    @fuzz_settings
    @given(request=requests())
    def check(request):
        kube.objects.clear()  # every example against the same cluster
        kube.objects.update(fresh)
        method, path, body = request
        status, text = loop.run_until_complete(send(method, path, body))
        TALLY["examples"] += 1
        TALLY[f"{status // 100}xx"] += 1
        assert status < 500 and "Traceback" not in text, (method, path, body[:300], status, text)

    try:
        check()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    with capsys.disabled():
        print(f"\nAPI fuzz: {dict(TALLY)}")
    assert TALLY["examples"] >= min(EXAMPLES, 1000)
