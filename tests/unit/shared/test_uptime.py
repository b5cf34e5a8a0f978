"""Uptime policy with the clock injected: windows across midnight and weeks, DST, overlaps,
session timers, stop times, grace periods, flapping player counts, wake-ups."""
import datetime as dt

from peon.shared.uptime import Observed, current_window, decide, next_window_start, parse_policy

UTC = dt.timezone.utc
BERLIN = "Europe/Berlin"


def at(y, mo, d, h, mi=0):
    return dt.datetime(y, mo, d, h, mi, tzinfo=UTC)


FRIDAY_NIGHTS = parse_policy({"timeZone": "UTC", "windows": [
    {"days": ["Fri", "Sat"], "start": "18:00", "end": "02:00"}]})


def test_windows_cross_midnight_and_the_week():
    # 2026-11-27 is a Friday.
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 27, 17, 59))).run is False
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 27, 18, 0))).run is True
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 28, 1, 59))).run is True   # Sat 01:59
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 28, 2, 0))).run is False
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 29, 1, 0))).run is True    # Sat night → Sun
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 29, 3, 0))).run is False
    d = decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 30, 12, 0)))                # Monday
    assert (d.run, d.reason, d.next_change) == (False, "OutsideWindow", at(2026, 12, 4, 18, 0))


def test_spec_stopped_always_wins():
    d = decide(FRIDAY_NIGHTS, False, Observed(at(2026, 11, 27, 20, 0), wake=at(2026, 11, 27, 19)))
    assert (d.run, d.reason) == (False, "Stopped")


def test_windows_follow_daylight_saving_time():
    evenings = parse_policy({"timeZone": BERLIN, "windows": [{"start": "19:00", "end": "23:00"}]})
    # Winter: 19:00 in Berlin is 18:00 UTC. Summer: 17:00 UTC.
    assert decide(evenings, True, Observed(at(2026, 1, 15, 18, 30))).run is True
    assert decide(evenings, True, Observed(at(2026, 7, 15, 18, 30))).run is True
    assert decide(evenings, True, Observed(at(2026, 7, 15, 21, 30))).run is False
    # The Sunday DST begins (2026-03-29), the window opens at 17:00 UTC.
    assert next_window_start(evenings, at(2026, 3, 29, 12)) == at(2026, 3, 29, 17)
    # A window inside the spring-forward gap (02:00-03:00 does not exist) still opens.
    gap = parse_policy({"timeZone": BERLIN, "windows": [{"start": "02:30", "end": "04:00"}]})
    assert decide(gap, True, Observed(at(2026, 3, 29, 1, 45))).run is True  # 03:45 CEST


def test_overlapping_windows_make_one_stretch():
    p = parse_policy({"windows": [{"start": "10:00", "end": "14:00"}, {"start": "13:00", "end": "18:00"}]})
    start, end = current_window(p, at(2026, 11, 28, 11))
    assert (start, end) == (at(2026, 11, 28, 10), at(2026, 11, 28, 18))


def test_session_timer_ends_a_session_until_the_next_window():
    p = parse_policy({"windows": [{"start": "18:00", "end": "23:00"}], "session": {"maxDuration": "2h"}})
    d = decide(p, True, Observed(at(2026, 11, 28, 19), session_start=at(2026, 11, 28, 18)))
    assert d.run and d.next_change == at(2026, 11, 28, 20)
    ended = decide(p, True, Observed(at(2026, 11, 28, 20), session_start=at(2026, 11, 28, 18)))
    assert (ended.run, ended.reason, ended.session_end) == (False, "SessionTimer", at(2026, 11, 28, 20))
    later = decide(p, True, Observed(at(2026, 11, 28, 21), session_end=ended.session_end,
                                     end_reason=ended.end_reason))
    assert later.run is False and later.reason == "SessionTimer"
    nxt = decide(p, True, Observed(at(2026, 11, 29, 18, 1), session_end=ended.session_end))
    assert nxt.run and nxt.session_start == at(2026, 11, 29, 18)


def test_peon_stop_at_time():
    p = parse_policy({"timeZone": BERLIN, "session": {"stopAt": "03:00"}})
    start = at(2026, 11, 28, 20)  # 21:00 in Berlin
    assert decide(p, True, Observed(at(2026, 11, 29, 1, 59), session_start=start)).run is True
    d = decide(p, True, Observed(at(2026, 11, 29, 2, 0), session_start=start))  # 03:00 CET
    assert (d.run, d.reason) == (False, "StopTime")


def test_idle_stop_waits_for_the_grace_period_and_counts_from_the_last_player():
    p = parse_policy({"idle": {"after": "30m", "grace": "10m"}})
    boot = at(2026, 11, 28, 12)
    assert decide(p, True, Observed(at(2026, 11, 28, 12, 35), session_start=boot, players=0)).run
    d = decide(p, True, Observed(at(2026, 11, 28, 12, 40), session_start=boot, players=0))
    assert (d.run, d.reason) == (False, "Idle")  # grace 10 min + 30 min idle
    seen = at(2026, 11, 28, 13, 0)
    assert decide(p, True, Observed(at(2026, 11, 28, 13, 29), session_start=boot, players=0,
                                    last_seen=seen)).run
    assert not decide(p, True, Observed(at(2026, 11, 28, 13, 30), session_start=boot, players=0,
                                        last_seen=seen)).run


def test_unknown_or_flapping_player_counts_do_not_stop_a_server():
    p = parse_policy({"idle": {"after": "30m", "grace": "0m"}})
    boot = at(2026, 11, 28, 12)
    # The query failed (players unknown): never a reason to stop.
    assert decide(p, True, Observed(at(2026, 11, 28, 15), session_start=boot, players=None)).run
    # Players came and went: the idle clock restarts from the last time one was seen.
    flaps = [(12, 10, 1), (12, 20, 0), (12, 25, 2), (12, 30, 0)]
    last_seen = None
    for h, m, n in flaps:
        if n:
            last_seen = at(2026, 11, 28, h, m)
        assert decide(p, True, Observed(at(2026, 11, 28, h, m), session_start=boot, players=n,
                                        last_seen=last_seen)).run
    assert decide(p, True, Observed(at(2026, 11, 28, 12, 54), session_start=boot, players=0,
                                    last_seen=last_seen)).run
    assert not decide(p, True, Observed(at(2026, 11, 28, 12, 55), session_start=boot, players=0,
                                        last_seen=last_seen)).run


def test_wake_up_starts_one_session_outside_a_window():
    p = parse_policy({"windows": [{"days": ["Sat"], "start": "18:00", "end": "23:00"}],
                      "idle": {"after": "15m", "grace": "5m"}})
    wake = at(2026, 11, 25, 20)  # a Wednesday
    d = decide(p, True, Observed(at(2026, 11, 25, 20, 1), wake=wake))
    assert (d.run, d.reason, d.session_start) == (True, "WokenUp", wake)
    idle = decide(p, True, Observed(at(2026, 11, 25, 20, 20), wake=wake, session_start=wake, players=0))
    assert (idle.run, idle.reason) == (False, "Idle")
    # The same wake-up does not start it again; a later one does.
    after = Observed(at(2026, 11, 25, 21), wake=wake, session_end=idle.session_end, end_reason="Idle")
    assert decide(p, True, after).run is False
    again = Observed(at(2026, 11, 25, 21), wake=at(2026, 11, 25, 20, 59),
                     session_end=idle.session_end, end_reason="Idle")
    assert decide(p, True, again).run is True


def test_a_wake_up_without_a_timer_lasts_four_hours():
    p = parse_policy({"windows": [{"days": ["Sat"], "start": "18:00", "end": "23:00"}]})
    wake = at(2026, 11, 25, 20)
    assert decide(p, True, Observed(at(2026, 11, 25, 23, 59), wake=wake, session_start=wake)).run
    assert not decide(p, True, Observed(at(2026, 11, 26, 0, 0), wake=wake, session_start=wake)).run


def test_no_policy_means_always_on():
    d = decide(parse_policy(None), True, Observed(at(2026, 11, 28, 3)))
    assert (d.run, d.reason, d.next_change) == (True, "AlwaysOn", None)


# --- stops asked for (peon.dev/sleep), as the PEON API and kubectl peon ask ----------------------

ALWAYS = parse_policy(None)
TIMER = parse_policy({"session": {"maxDuration": "8h"}})


def test_a_stop_asked_for_now_stops_an_unrestricted_server_until_a_wake_up():
    asked = at(2026, 11, 29, 20)
    d = decide(ALWAYS, True, Observed(at(2026, 11, 29, 20, 1), sleep=asked))
    assert (d.run, d.reason, d.session_end, d.end_reason) == (False, "StopRequested", asked,
                                                             "StopRequested")
    later = Observed(at(2026, 11, 30, 9), sleep=asked, session_end=asked, end_reason="StopRequested")
    assert decide(ALWAYS, True, later).run is False  # stays stopped
    woken = decide(ALWAYS, True, Observed(at(2026, 11, 30, 9, 1), sleep=asked, wake=at(2026, 11, 30, 9),
                                          session_end=asked, end_reason="StopRequested"))
    assert (woken.run, woken.reason) == (True, "AlwaysOn")


def test_a_start_for_five_hours_stops_at_its_end():
    """PEON's `start {"interval": "5h"}`: a wake-up now and a stop asked for in five hours."""
    woke, stop = at(2026, 11, 29, 18), at(2026, 11, 29, 23)
    d = decide(ALWAYS, True, Observed(at(2026, 11, 29, 18, 1), wake=woke, sleep=stop))
    assert (d.run, d.next_change) == (True, stop) and "23:00" in d.message
    d = decide(ALWAYS, True, Observed(at(2026, 11, 29, 23), wake=woke, sleep=stop))
    assert (d.run, d.reason) == (False, "StopRequested")
    # Under a session timer the earlier of the two ends the session.
    d = decide(TIMER, True, Observed(at(2026, 11, 29, 18, 1), wake=woke, sleep=stop))
    assert (d.run, d.next_change) == (True, stop)
    d = decide(TIMER, True, Observed(at(2026, 11, 29, 23, 0), wake=woke, sleep=stop,
                                     session_start=woke))
    assert (d.run, d.reason, d.end_reason) == (False, "StopRequested", "StopRequested")


def test_a_stop_asked_for_inside_a_window_holds_until_the_next_window():
    asked = at(2026, 11, 27, 20)  # a Friday evening, inside the window
    d = decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 27, 20, 5), sleep=asked,
                                             session_start=at(2026, 11, 27, 18)))
    assert (d.run, d.reason, d.next_change) == (False, "StopRequested", at(2026, 11, 28, 18))
    d = decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 28, 18, 1), sleep=asked,
                                             session_end=asked, end_reason="StopRequested"))
    assert (d.run, d.reason) == (True, "InWindow")


def test_a_wake_up_after_a_stop_asked_for_cancels_it():
    d = decide(ALWAYS, True, Observed(at(2026, 11, 29, 21), sleep=at(2026, 11, 29, 20),
                                      wake=at(2026, 11, 29, 20, 30)))
    assert d.run is True


def test_a_stop_now_takes_the_wake_up_away_so_the_same_second_cannot_cancel_it():
    from peon.shared.actions import start_patch, stop_patch
    now = at(2026, 11, 29, 20)
    started = start_patch(now)["metadata"]["annotations"]
    stopped = stop_patch(now, now)["metadata"]["annotations"]
    assert stopped == {"peon.dev/sleep": "2026-11-29T20:00:00Z", "peon.dev/wake": None}
    # What the annotations are after both (a merge patch removes a null):
    after = {k: v for k, v in {**started, **stopped}.items() if v}
    d = decide(ALWAYS, True, Observed(now, sleep=at(2026, 11, 29, 20), wake=None))
    assert after == {"peon.dev/sleep": "2026-11-29T20:00:00Z"} and d.run is False
    later = stop_patch(at(2026, 11, 29, 22), now)["metadata"]["annotations"]
    assert later == {"peon.dev/sleep": "2026-11-29T22:00:00Z"}  # a scheduled stop keeps the wake-up


def test_a_start_in_the_same_second_as_a_stop_takes_it_back():
    """The operator remembers the stop in status; the start removed the annotation, so that
    memory no longer stands, even when the clock did not move (a frozen test clock, a fast user)."""
    t = at(2026, 11, 29, 20)
    remembered = dict(session_end=t, end_reason="StopRequested")
    assert decide(ALWAYS, True, Observed(t, wake=t, **remembered)).run is True
    assert decide(TIMER, True, Observed(t, wake=t, **remembered)).run is True
    assert decide(FRIDAY_NIGHTS, True, Observed(at(2026, 11, 27, 20), wake=at(2026, 11, 27, 20),
                                                session_end=at(2026, 11, 27, 20),
                                                end_reason="StopRequested")).run is True
