"""Servers by phase are counted when Prometheus scrapes, not after every reconcile."""
from prometheus_client import REGISTRY

from fake_kube import FakeKube

from peon.controller import Controller


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
