"""The liveness probe: a stream or reconcile that is stuck fails it; a stream that retries
against an API server that is away does not."""
import kopf
import pytest

from fake_kube import FakeKube

from peon.operator import handlers, health, watches
from peon.operator.controller import Controller
from peon.operator.health import Progress, stuck
from peon.operator.namespaces import Scope


def test_a_quiet_stream_within_its_longest_watch_is_alive():
    assert stuck([Progress("watch-Pod-all", True, 1000.0)], [], now=1000.0 + 700) == []


def test_a_silent_stream_a_dead_thread_and_a_long_reconcile_are_stuck():
    streams = [Progress("watch-Pod-all", True, 0.0), Progress("watch-Service-all", False, 990.0)]
    workers = [Progress("GameServer/games/odin", True, 100.0),
               Progress("GameServer/games/thor", True, 950.0)]
    assert stuck(streams, workers, now=1000.0) == [
        "stream watch-Service-all: its thread ended",
        "stream watch-Pod-all: no progress for 1000 s",
        "reconcile of GameServer/games/odin: running for 900 s"]


def test_every_event_and_retry_is_progress(monkeypatch):
    clock = [10.0]
    monkeypatch.setattr(watches.time, "monotonic", lambda: clock[0])
    r = watches.Reflector(FakeKube(), watches.streams_for(Scope())[0], lambda *a: None, dict)
    clock[0] = 500.0
    r.report({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}})
    assert r.progress_at == 500.0 and r.version == "7"


def test_the_probe_fails_with_what_is_stuck_and_answers_otherwise(monkeypatch):
    controller = Controller(FakeKube(), workers=1, job_image="peon.invalid/job:1")
    memo = kopf.Memo(controller=controller, watches=[])
    assert handlers.liveness(memo=memo) == {"streams": 0, "reconciling": 0}
    controller.reconciling[0] = (("GameServer", "games", "odin"), 0.0)
    monkeypatch.setattr(handlers.time, "monotonic", lambda: health.RECONCILE_SECONDS + 1)
    with pytest.raises(kopf.PermanentError, match="reconcile of GameServer/games/odin"):
        handlers.liveness(memo=memo)
