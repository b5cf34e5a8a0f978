"""The sleeping server's mark, the one wake rule, the drop counters and the per-source rate limit."""
import datetime as dt

import pytest

from peon.gate.view import Drops, RateLimiter, Refused, SleepingServer, cut, knock

UTC = dt.timezone.utc


def test_the_mark_says_whether_a_join_wakes_it_and_when_it_can():
    assert SleepingServer(name="s").mark == "asleep, join to wake"
    assert SleepingServer(name="s", wake_on_connect=False).mark == "asleep"
    now = dt.datetime(2026, 1, 9, 12, 0, tzinfo=UTC)  # a Friday
    today = SleepingServer(name="s", window_open=False, now=now,
                           opens_at=dt.datetime(2026, 1, 9, 18, 0, tzinfo=UTC))
    assert today.mark == "asleep: wakes at 18:00"
    assert SleepingServer(name="s", window_open=False, now=now,
                          opens_at=dt.datetime(2026, 1, 12, 8, 5, tzinfo=UTC)
                          ).mark == "asleep: wakes at Mon 08:05"
    assert SleepingServer(name="s", window_open=False).mark == "asleep: outside its hours"
    assert SleepingServer(name="s", map="dm4").shown_map == "dm4 (asleep, join to wake)"
    assert SleepingServer(name="s").shown_map == "asleep, join to wake"


def test_knock_follows_the_switch_the_window_and_the_wake_list():
    assert knock(SleepingServer(name="s"), "datagram") .wake
    assert knock(SleepingServer(name="s", wake_on_connect=False), "login", "a").reason == \
        "wake switched off"
    assert knock(SleepingServer(name="s", window_open=False), "tcp").reason == "outside its hours"
    listed = SleepingServer(name="s", wake_players=frozenset({"Alex"}))
    assert knock(listed, "login", "ALEX").wake
    assert knock(listed, "login", "Steve").reason == "not allowed"
    assert knock(listed, "datagram").reason == "not allowed"  # a list and no name to check


def test_cut_keeps_characters_whole_and_drops_nuls_and_newlines():
    assert cut("é" * 100, 5) == "éé"
    assert cut("a\x00b\nc") == "ab c"


def test_drops_count_by_protocol_and_a_known_reason_only():
    drops = Drops()
    drops.add("a2s", "short")
    drops.add("a2s", "short")
    drops.add("quake3", "long")
    assert drops.counts[("a2s", "short")] == 2 and drops.total() == 3
    with pytest.raises(AssertionError):
        drops.add("a2s", "made up")
    assert Refused("short", "x").reason == "short"


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_the_rate_limit_allows_a_burst_then_the_rate_per_source():
    clock = Clock()
    limit = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b")  # another source has its own bucket
    clock.t = 0.5  # one token back
    assert limit.allow("a") and not limit.allow("a")
    clock.t = 100.0  # never more than the burst
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]


def test_the_rate_limit_keeps_a_bounded_number_of_sources():
    clock = Clock()
    limit = RateLimiter(rate=1, burst=1, clock=clock, max_sources=100)
    for i in range(10_000):
        limit.allow(("10.0.0.1", i))
    assert len(limit.buckets) == 100


def test_a_clock_going_back_gives_no_tokens():
    clock = Clock()
    clock.t = 10.0
    limit = RateLimiter(rate=1, burst=1, clock=clock)
    assert limit.allow("a")
    clock.t = 5.0
    assert not limit.allow("a")


def test_a_rate_limit_that_cannot_work_is_refused():
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)
