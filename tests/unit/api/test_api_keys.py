"""Friends' keys: parsing the keys file, roles per route, and the wrong-key throttle (pure)."""
import pytest

from peon.api import keys
from peon.api.keys import ADMIN, PLAYER, VIEWER, Friend, Keyring, Throttle, needed_role, parse_keys

GOOD = """
alice: {key: aaaaaaaaaaaaaaaaaaaa, role: player, servers: [vikings]}
bob: {key: bbbbbbbbbbbbbbbbbbbb, role: viewer}
carol: {key: cccccccccccccccccccc, role: admin}
"""


def test_a_keys_file_names_friends_with_roles_and_servers():
    friends, problems = parse_keys(GOOD)
    assert problems == []
    ring = Keyring(friends)
    alice = ring.find("a" * 20)
    assert alice == Friend("alice", PLAYER, frozenset({"vikings"}))
    assert alice.sees("vikings") and not alice.sees("odin") and alice.may(PLAYER)
    assert not alice.may(ADMIN)
    assert ring.find("b" * 20).role == VIEWER and ring.find("b" * 20).servers is None
    assert ring.find("c" * 20).may(ADMIN)
    assert ring.find("a" * 19) is None and ring.find("") is None and ring.find("x" * 20) is None


@pytest.mark.parametrize("text,kept,problem", [
    ("dave: {key: short, role: admin}", [], "at least 16"),
    ("dave: {key: dddddddddddddddddddd, role: root}", [], "role must be one of"),
    ("dave: {key: dddddddddddddddddddd, servers: vikings}", [], "servers must be a list"),
    ("dave: {key: dddddddddddddddddddd, roles: admin}", [], "unknown fields roles"),
    ("dave: just-a-string", [], "give {key, role}"),
    ("'<script>': {key: dddddddddddddddddddd}", [], "a name is letters"),
    ("a: {key: eeeeeeeeeeeeeeeeeeee}\nb: {key: eeeeeeeeeeeeeeeeeeee}", [], "share a key"),
    ("a: {key: eeeeeeeeeeeeeeeeeeee}\nb: {key: short}", ["a"], "b: the key"),
])
def test_a_bad_entry_is_refused_by_name_and_never_shows_a_key(text, kept, problem):
    friends, problems = parse_keys(text)
    assert [f.name for _, f in friends] == kept
    assert any(problem in p for p in problems), problems
    assert not any(k in p for p in problems for k in ("dddddddd", "eeeeeeee"))


def test_an_empty_file_gives_no_friends_and_a_broken_one_is_an_error():
    assert parse_keys("") == ([], []) and parse_keys(b"# nobody yet\n") == ([], [])
    for text, problem in (("x" * (keys.MAX_FILE + 1), "more than"), ("[1, 2]", "must map"),
                          ("a: {key: [unclosed", "not YAML (line 1)")):
        with pytest.raises(keys.KeysFileError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            parse_keys(text)


@pytest.mark.parametrize("method,path,role", [
    ("GET", "/api/v1/servers", VIEWER), ("GET", "/api/v1/server/get/valheim.odin", VIEWER),
    ("GET", "/api/v1/server/stats/valheim.odin", VIEWER), ("GET", "/page/servers", VIEWER),
    ("GET", "/api/1.0/server/get/valheim.odin", VIEWER), ("GET", "/api/v1/plans", VIEWER),
    ("PUT", "/api/v1/server/start/valheim.odin", PLAYER), ("PUT", "/api/v1/server/stop/x.y", PLAYER),
    ("PUT", "/api/1.0/server/restart/x.y", PLAYER), ("POST", "/page/extend/x.y", PLAYER),
    ("POST", "/page/stop/x.y", PLAYER), ("POST", "/page/start/x.y", PLAYER),
    ("GET", "/api/v1/server/save/x.y", ADMIN), ("PUT", "/api/v1/server/save/x.y", ADMIN),
    ("GET", "/api/v1/server/logs/x.y", ADMIN), ("GET", "/page/logs/x.y", ADMIN),
    ("GET", "/page/backups/x.y", ADMIN), ("POST", "/page/restore/x.y", ADMIN),
    ("GET", "/page/download/x.y/b", ADMIN), ("POST", "/page/backup/x.y", ADMIN),
    ("POST", "/api/v1/server/create", ADMIN), ("PUT", "/api/v1/server/create/valheim.x", ADMIN),
    ("DELETE", "/api/v1/server/destroy/x.y", ADMIN), ("PUT", "/api/v1/servers", ADMIN),
    ("PUT", "/api/v1/plans", ADMIN), ("POST", "/api/1.0/servers", ADMIN),
    ("PUT", "/api/v1/server/description/x.y", ADMIN), ("PUT", "/api/v1/server/update/x.y", ADMIN),
])
def test_each_route_needs_its_role(method, path, role):
    assert needed_role(method, path) == role


def test_wrong_keys_are_limited_per_address_for_a_window():
    t = Throttle(limit=3, window=60, addresses=2)
    for i in range(3):
        assert t.wait("1.2.3.4", 100 + i) == 0
        t.failed("1.2.3.4", 100 + i)
    assert t.wait("1.2.3.4", 103) == pytest.approx(57)  # the oldest failure leaves at 160
    assert t.wait("5.6.7.8", 103) == 0  # another address is not held back
    assert t.wait("1.2.3.4", 160.5) == 0  # one failure aged out: one more try
    t.failed("9.9.9.9", 1), t.failed("8.8.8.8", 1)
    assert len(t.failures) == 2  # bounded: the oldest address went
