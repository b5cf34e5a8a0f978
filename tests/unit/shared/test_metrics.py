"""Servers by phase are counted when Prometheus scrapes, not after every reconcile."""
from prometheus_client import REGISTRY

from fake_kube import FakeKube

from peon.operator.controller import Controller


def servers(phase: str) -> float:
    return REGISTRY.get_sample_value("peon_gameservers", {"phase": phase})


def test_servers_by_phase_follow_the_controllers_phases_at_scrape_time():
    c = Controller(FakeKube(), workers=1, job_image="peon.invalid/job:1")
    c.phases[("GameServer", "a", "x")] = "Running"
    c.phases[("GameServer", "a", "y")] = "Running"
    c.phases[("GameServer", "b", "z")] = "Pending"
    assert (servers("Running"), servers("Pending"), servers("Stopped")) == (2, 1, 0)
    del c.phases[("GameServer", "a", "x")]
    assert servers("Running") == 1


def test_the_offsite_loss_window_is_each_servers_snapshot_age_when_scraped():
    import datetime as dt
    from peon.shared import metrics
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
    servers_ = {("games", "odin"): {"status": {"backup": {"lastOffsiteTime": "2026-12-06T09:00:00Z"}}},
                ("games", "local"): {"status": {"backup": {"lastSuccessfulTime": "2026-12-06T11:00:00Z"}}}}
    metrics.OFFSITE_AGES.watch(servers_, lambda: now)
    age = lambda name: REGISTRY.get_sample_value("peon_offsite_backup_age_seconds",
                                                 {"namespace": "games", "gameserver": name})
    assert age("odin") == 3 * 3600 and age("local") is None
