"""Which uptime transitions are Events: automatic starts and stops, not the user's own."""
from peon.operator.sessions import transition_event


def test_automatic_starts_and_stops_are_events():
    assert transition_event({"running": False, "reason": "OutsideWindow"},
                            {"running": True, "reason": "InWindow", "message": "in a window"}) == \
        ("AutoStart", "started: in a window (InWindow)")
    assert transition_event({"running": True, "reason": "InWindow"},
                            {"running": False, "reason": "Idle", "message": "nobody was on"}) == \
        ("AutoStop", "stopped: nobody was on (Idle)")


def test_the_users_own_stop_and_start_are_not_automatic():
    # spec.state Stopped, then Running again by hand: neither is an automatic transition.
    assert transition_event({"running": True, "reason": "AlwaysOn"},
                            {"running": False, "reason": "Stopped", "message": "stopped"}) is None
    assert transition_event({"running": False, "reason": "Stopped"},
                            {"running": True, "reason": "AlwaysOn", "message": "always on"}) is None


def test_no_event_without_a_change_or_a_past():
    assert transition_event({}, {"running": True, "reason": "AlwaysOn", "message": "x"}) is None
    assert transition_event({"running": True, "reason": "InWindow"},
                            {"running": True, "reason": "InWindow", "message": "x"}) is None
