"""The pure maintenance decisions (issue 28): hold or apply, the deadline, the warnings and
scheduled restarts."""
import datetime as dt

import pytest

from peon.shared import maintenance as mt

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
M = dt.timedelta(minutes=1)
WAIT = mt.Policy(policy=mt.WHEN_EMPTY, max_delay=dt.timedelta(hours=1))


def obs(now=T0, pending="new settings", running=True, players=2, since=None, done=None,
        warned_for=None, warned=None):
    return mt.Observed(now, pending, running, players, since, done, warned_for, warned)


def test_a_change_with_players_on_is_held_until_the_deadline():
    p = mt.decide(WAIT, obs())
    assert p.held and p.reason == mt.PLAYERS_ONLINE
    assert p.pending_since == T0 and p.deadline == T0 + dt.timedelta(hours=1)
    assert "2 players on" in p.message and "new settings waits" in p.message
    # the first warning is 10 minutes before the deadline: looked at again then
    assert p.look_again == T0 + 50 * M and p.warn is None


def test_the_deadline_counts_from_when_the_change_was_first_seen():
    p = mt.decide(WAIT, obs(now=T0 + 30 * M, since=T0))
    assert p.held and p.deadline == T0 + 60 * M
    p = mt.decide(WAIT, obs(now=T0 + 60 * M, since=T0))
    assert p.apply and p.reason == mt.APPLIED_DEADLINE and "2 players on" in p.message


@pytest.mark.parametrize("o,reason", [
    (dict(players=0), mt.APPLIED_EMPTY),
    (dict(running=False), mt.APPLIED_NOT_RUNNING),
    (dict(pending=None), mt.NO_CHANGE),
])
def test_applied_at_once_when_empty_asleep_or_nothing_waits(o, reason):
    p = mt.decide(WAIT, obs(**o))
    assert p.apply and p.reason == reason and p.warn is None


def test_policy_now_applies_whoever_is_on_and_no_block_means_now():
    assert mt.decide(mt.Policy(policy=mt.NOW), obs()).reason == mt.APPLIED_NOW
    assert mt.parse_policy(None, T0).policy == mt.NOW
    assert mt.parse_policy({}, T0).policy == mt.WHEN_EMPTY  # a block asks for the hold


def test_an_unreadable_player_count_holds_until_the_deadline_and_says_so():
    p = mt.decide(WAIT, obs(players=None))
    assert p.held and p.reason == mt.PLAYERS_UNKNOWN
    assert "cannot be read" in p.message
    p = mt.decide(WAIT, obs(players=None, now=T0 + 61 * M, since=T0))
    assert p.apply and p.reason == mt.APPLIED_DEADLINE


def test_warnings_at_10_5_and_1_minutes_before_the_deadline_each_once():
    said = []
    warned_for = warned = None
    times = [T0 + k * M for k in range(0, 61)] + [T0 + 60 * M]
    for now in times:
        p = mt.decide(WAIT, obs(now=now, since=T0, warned_for=warned_for, warned=warned))
        if p.warn:
            said.append((now, p.warn))
        warned_for, warned = p.warned_for, p.warned_down_to
    assert [now for now, _ in said] == [T0 + 50 * M, T0 + 55 * M, T0 + 59 * M]
    assert "10 minutes" in said[0][1] and "5 minutes" in said[1][1] and "1 minute " in said[2][1]
    assert "new settings" in said[0][1]


def test_warnings_overtaken_are_said_once_with_the_time_left():
    short = mt.Policy(policy=mt.WHEN_EMPTY, max_delay=3 * M)
    p = mt.decide(short, obs())
    assert p.warn and "3 minutes" in p.warn and p.warned_down_to == 5 * M
    p2 = mt.decide(short, obs(now=T0 + M, since=T0, warned_for=p.warned_for,
                              warned=p.warned_down_to))
    assert p2.warn is None and p2.look_again == T0 + 2 * M  # the 1-minute warning


def test_no_warning_with_nobody_on():
    p = mt.decide(mt.Policy(policy=mt.WHEN_EMPTY, restart_schedule="0 4 * * *"),
                  obs(pending=None, players=0, now=T0.replace(hour=3, minute=55), done=T0 - dt.timedelta(days=1)))
    assert p.warn is None and p.apply


def test_a_scheduled_restart_warns_before_its_slot_then_restarts():
    pol = mt.Policy(policy=mt.WHEN_EMPTY, restart_schedule="0 4 * * *", time_zone="Europe/Berlin")
    slot = dt.datetime(2026, 5, 2, 2, 0, tzinfo=dt.timezone.utc)  # 04:00 in Berlin (CEST)
    done = T0
    p = mt.decide(pol, obs(pending=None, now=slot - 10 * M, done=done))
    assert p.apply and p.next_restart == slot and p.warn and "10 minutes" in p.warn
    assert "scheduled restart" in p.warn
    p = mt.decide(pol, obs(pending=None, now=slot + dt.timedelta(seconds=1), done=done))
    assert p.restart_slot == slot and p.apply
    # done: no second restart for the same slot
    p = mt.decide(pol, obs(pending=None, now=slot + M, done=slot))
    assert p.restart_slot is None


def test_a_scheduled_restart_takes_a_held_change_with_it():
    pol = mt.Policy(policy=mt.WHEN_EMPTY, restart_schedule="0 * * * *")
    p = mt.decide(pol, obs(now=T0 + dt.timedelta(hours=1, seconds=5), since=T0 + 30 * M, done=T0))
    assert p.restart_slot == T0 + dt.timedelta(hours=1) and p.apply
    assert "new settings" in p.message


def test_the_restart_schedule_is_not_made_up_for_before_it_was_seen():
    pol = mt.Policy(restart_schedule="0 * * * *")
    assert mt.decide(pol, obs(pending=None, done=None)).restart_slot is None


@pytest.mark.parametrize("spec,words", [
    ({"restartSchedule": {"cron": "0 0 31 2 *"}}, "never fires"),
    ({"restartSchedule": {"cron": "61 * * * *"}}, "not a cron"),
    ({"maxDelay": "soon"}, "not a duration"),
    ({"warnings": ["0m"]}, "not 0m"),
    ({"policy": "Whenever"}, "WhenEmpty"),
])
def test_bad_policies_are_refused_with_what_is_wrong(spec, words):
    with pytest.raises(ValueError, match=words):
        mt.parse_policy(spec, T0)


def test_unknown_time_zone_is_refused():
    with pytest.raises(LookupError):
        mt.parse_policy({"restartSchedule": {"cron": "0 4 * * *", "timeZone": "Mars/Olympus"}}, T0)


def test_console_checks_and_the_say_command_is_one_bounded_line():
    c = mt.parse_console({"protocol": "rcon", "port": "rcon", "passwordKey": "RCON_PASSWORD"})
    assert mt.check_console(c, {"rcon": "TCP"}) is None
    assert "not one of the Game's TCP ports" in mt.check_console(c, {"rcon": "UDP"})
    assert "not one of" in mt.check_console(c, {"game": "TCP"})
    assert mt.check_console(mt.parse_console({"protocol": "exec"}), {}) == \
        "console.command is required for exec"
    said = c.say_command("hi\nthere\x00" + "x" * 500)
    assert said.startswith("say hi there") and "\n" not in said and len(said) <= 4 + mt.SAY_LIMIT


# --- updates of moving tags (item 4) -------------------------------------------------------------

def test_an_update_asked_is_due_until_made():
    from peon.shared.maintenance import update_due
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    asked = now - dt.timedelta(minutes=5)
    p = mt.Policy()
    assert update_due(p, now, asked, None, None) == (asked, None)
    assert update_due(p, now, asked, asked - dt.timedelta(days=1), None) == (asked, None)
    assert update_due(p, now, asked, asked, None) == (None, None)  # made
    assert update_due(p, now, None, None, None) == (None, None)


def test_a_scheduled_update_is_due_once_per_slot_after_the_schedule_was_seen():
    from peon.shared.maintenance import update_due
    p = mt.parse_policy({"updateSchedule": {"cron": "0 4 * * *", "timeZone": "Europe/Berlin"}},
                        dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc))
    assert p.update_schedule == "0 4 * * *" and p.wants_players
    slot = dt.datetime(2026, 5, 1, 2, 0, tzinfo=dt.timezone.utc)  # 04:00 in Berlin (CEST)
    now = slot + dt.timedelta(hours=1)
    since = slot - dt.timedelta(days=3)
    due, nxt = update_due(p, now, None, None, since)
    assert due == slot and nxt == slot + dt.timedelta(days=1)
    assert update_due(p, now, None, slot, since)[0] is None  # made
    assert update_due(p, now, None, None, now - dt.timedelta(minutes=1))[0] is None  # seen after
    # An update asked after the slot is the one made (it pulls the newer image either way).
    asked = now - dt.timedelta(minutes=1)
    assert update_due(p, now, asked, None, since)[0] == asked


def test_an_update_schedule_that_never_fires_is_refused():
    with pytest.raises(ValueError, match="updateSchedule.cron"):
        mt.parse_policy({"updateSchedule": {"cron": "0 0 31 2 *"}},
                        dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc))
