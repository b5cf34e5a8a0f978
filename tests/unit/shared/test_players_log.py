"""Players from a server's log (query protocol log): the counting by name, the count lines, the
position kept between reads, and the patterns a Game may name."""
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from peon.shared.model import InvalidSpec, parse_game
from peon.shared.players import (LOG_LINE_MAX, LogPosition, LogRules, LogTally, log_rules_problem,
                                 parse_log_timestamp)

TESTGAME = LogRules(join=r"player (?P<player>[A-Za-z0-9_-]+) joined",
                    leave=r"player (?P<player>[A-Za-z0-9_-]+) left")


def tally(rules, lines):
    t = LogTally(rules)
    for line in lines:
        t.feed(line)
    return t.players()


def test_joined_minus_left_by_name_in_order_of_joining():
    got = tally(TESTGAME, ["testgame: player alice joined (1 online)",
                           "testgame: player bob joined (2 online)",
                           "testgame: player alice joined (2 online)",  # again: still one alice
                           "testgame: player carol joined (3 online)",
                           "testgame: player alice left (2 online)",
                           "testgame: something else"])
    assert (got.online, got.names, got.max) == (2, ("bob", "carol"), 0)


def test_a_leave_never_seen_joining_changes_nothing():
    got = tally(TESTGAME, ["player dave left", "player erin joined", "player dave left"])
    assert (got.online, got.names) == (1, ("erin",))


names = st.sampled_from(["a", "b", "c", "d"])
events = st.lists(st.tuples(st.sampled_from(["joined", "left", "noise"]), names), max_size=60)


@given(events)
@settings(max_examples=300, deadline=None)
def test_the_count_is_the_set_of_names_joined_and_not_left_since(evts):
    got = tally(TESTGAME, [f"player {n} {what}" for what, n in evts])
    on = set()
    for what, n in evts:
        if what == "joined":
            on.add(n)
        elif what == "left":
            on.discard(n)
    assert got.online == len(on) == len(got.names) >= 0 and set(got.names) == on




def test_a_stated_count_is_the_count_and_names_still_listed():
    rules = LogRules(join=TESTGAME.join, leave=TESTGAME.leave,
                     count=r"now (?P<count>[0-9]+) player\(s\)")
    got = tally(rules, ["player a joined", "player b joined", "x, now 1 player(s)"])
    assert (got.online, got.names) == (1, ("a", "b"))
    assert tally(rules, ["player a joined"]).online == 1  # no count line yet: the names


def test_a_long_line_is_matched_on_its_start_only():
    got = tally(TESTGAME, ["x" * LOG_LINE_MAX + " player zed joined", "player amy joined" + "y" * 10**6])
    assert got.names == ("amy",)


@pytest.mark.parametrize("rules,says", [
    (LogRules(), "name join and leave"),
    (LogRules(join=r"(?P<player>\w+) joined"), "go together"),
    (LogRules(join=r"(?P<player>\w+ joined", leave=r"(?P<player>\w+) left"), "not a regular expression"),
    (LogRules(join=r"(\w+) joined", leave=r"(?P<player>\w+) left"), "no group (?P<player>"),
    (LogRules(count=r"now (\d+) players"), "no group (?P<count>"),
    (LogRules(join=r"((?P<player>\w+) )+joined", leave=r"(?P<player>\w+) left"), "repeats a group"),
    (LogRules(join=r"(a*)*(?P<player>\w+) joined", leave=r"(?P<player>\w+) left"), "repeats a group"),
    (LogRules(join=r"(?:(?:a|b)+c){2,}(?P<player>x)", leave=r"(?P<player>\w+) left"), "repeats a group"),
    (LogRules(join="(?P<player>x)" + "y" * 600, leave=r"(?P<player>\w+) left"), "longer than 512"),
])
def test_bad_patterns_are_named(rules, says):
    assert says in (log_rules_problem(rules) or "")


def test_good_patterns_pass():
    assert log_rules_problem(TESTGAME) is None
    assert log_rules_problem(LogRules(count=r"now (?P<count>[0-9]+) player\(s\)")) is None
    assert log_rules_problem(LogRules(join=r"from (?P<player>.+) : -?[1-9][0-9]*:[0-9]+$",
                                      leave=r"left (?P<player>.+)$")) is None
    # a repeated group without a quantifier inside, a class holding + or ( or ): fine
    assert log_rules_problem(LogRules(join=r"(?:ab)+ [(+)]+ (?P<player>[^ ()]+)",
                                      leave=r"(?P<player>\w+) left")) is None


def game(query):
    return {"metadata": {"name": "g"}, "spec": {"image": "i", "dataPath": "/data", "query": query,
                                                "ports": [{"name": "game", "containerPort": 1}]}}


def test_a_game_reads_its_log_lines_and_a_bad_one_is_an_invalid_game():
    g = parse_game(game({"protocol": "log", "log": {"join": TESTGAME.join, "leave": TESTGAME.leave}}))
    assert g.query.protocol == "log" and g.query.log == TESTGAME
    for query, says in [({"protocol": "log"}, "go together"),
                        ({"protocol": "a2s", "port": "game", "log": {"count": "(?P<count>1)"}}, "go together"),
                        ({"protocol": "log", "log": {"join": "(?P<player>(", "leave": "(?P<player>x)"}},
                         "spec.query.log: join is not a regular expression")]:
        with pytest.raises(InvalidSpec) as e:
            parse_game(game(query))
        assert e.value.reason == "InvalidGame" and says in e.value.message


def test_kubelet_timestamps_parse_to_nanoseconds():
    a = parse_log_timestamp(b"2026-12-07T04:01:02.123456789Z")
    assert a % 10**9 == 123456789
    assert parse_log_timestamp(b"2026-12-07T04:01:02.5Z") == a - 123456789 + 500000000
    assert parse_log_timestamp(b"2026-12-07T04:01:02Z") == a - 123456789
    assert parse_log_timestamp(b"2026-12-07T05:01:02+01:00") == a - 123456789
    assert parse_log_timestamp(b"yesterday") is None


def stamp(second, frac=""):
    return f"2026-12-07T04:01:{second:02d}{frac}Z".encode()


def test_a_read_from_the_last_second_passes_over_the_lines_already_counted():
    p = LogPosition()
    first = b"".join([stamp(1, ".1") + b" a\n", stamp(2, ".5") + b" b\n", stamp(2, ".5") + b" c\n"])
    assert p.new_lines(first, full=False) == ["a", "b", "c"]
    assert p.since() == "2026-12-07T04:01:02Z"
    # The API answers again from 04:01:02: b and c again (same timestamps), then news.
    again = stamp(2, ".5") + b" b\n" + stamp(2, ".5") + b" c\n" + stamp(2, ".5") + b" d\n" + \
        stamp(3) + b" e\n"
    assert p.new_lines(again, full=False) == ["d", "e"]
    assert p.new_lines(stamp(3) + b" e\n", full=False) == []


def test_a_read_cut_by_its_limit_leaves_its_last_line_for_the_next():
    p = LogPosition()
    assert p.new_lines(stamp(1) + b" a\n" + stamp(2) + b" hal", full=True) == ["a"]
    assert p.new_lines(stamp(1) + b" a\n" + stamp(2) + b" half a line\n", full=False) == ["half a line"]
    q = LogPosition()  # one line longer than the limit: taken cut, not read for ever
    assert q.new_lines(stamp(5) + b" " + b"z" * 100, full=True) == ["z" * 100]


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["x", "y"])), max_size=30),
       st.integers(1, 400))
@settings(max_examples=200, deadline=None)
def test_reading_in_pieces_of_any_size_sees_every_line_once(lines, limit):
    """However the limit cuts the log, and from whatever second each read starts, the lines
    come out once each and in order."""
    lines = sorted(lines, key=lambda x: x[0])
    log = [stamp(s, f".{i:03d}") + f" {t}{i}".encode() + b"\n" for i, (s, t) in enumerate(lines)]
    p, out = LogPosition(), []
    for _ in range(10 * len(log) + 5):
        since = p.since()
        start = [l for l in log if since is None or l[:19] >= since[:19].encode()]
        chunk = b"".join(start)[:limit]
        full = len(b"".join(start)) > limit
        before = (p.last, p.at_last)
        out += p.new_lines(chunk, full)
        if full and (p.last, p.at_last) == before:
            p.pass_second()  # as log_players does
        if not full:
            break
    per_second = {}
    for l in log:
        per_second[l[:19]] = per_second.get(l[:19], 0) + len(l)
    if all(size <= limit for size in per_second.values()):  # else: log_players passes over
        assert out == [l.split(b" ", 1)[1].decode().rstrip("\n") for l in log]


def test_valheims_crossplay_variant_counts_from_the_lines_its_catalogue_entry_quotes():
    """The variant in the catalogue's Valheim header is a valid Game query, and counts the
    PlayFab lines the header quotes."""
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[3] / "examples/games/valheim.yaml").read_text()
    header = [line[2:] for line in text.splitlines() if line.startswith("# ")]
    variant = yaml.safe_load(next(line for line in header if line.lstrip().startswith("query:")))
    g = parse_game(game(variant["query"]))
    quoted = [line.strip() for line in header if line.strip().startswith("Player ")]
    assert len(quoted) == 2
    # as the server prints them, with its date (and lloesche's supervisord prefix)
    joined, lost = (f"Dec 07 04:00:00 supervisord: valheim-server 12/07/2026 04:00:00: {q}" for q in quoted)
    lines = [joined, joined.replace("now 1", "now 2"), lost.replace("now 0", "now 1"),
             "12/07/2026 04:00:01: Got character ZDOID from Odin : 1234:1"]
    assert tally(g.query.log, lines).online == 1
    assert tally(g.query.log, lines + [lost]).online == 0
    assert tally(g.query.log, lines[:2]).online == 2
