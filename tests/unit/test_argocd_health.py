"""The Argo CD health check on status shapes the operator writes (the integration test
tests/integration/test_argocd.py feeds it live objects from the cluster)."""
from argocd_health import health


def obj(phase=None, generation=1, observed=1, conditions=()):
    o = {"metadata": {"generation": generation}}
    if phase:
        o["status"] = {"phase": phase, "observedGeneration": observed, "conditions": list(conditions)}
    return o


def test_no_status_yet_or_an_unseen_spec_is_progressing():
    assert health(obj())[0] == "Progressing"
    assert health(obj("Running", generation=3, observed=2))[0] == "Progressing"


def test_a_held_update_is_degraded_with_the_reason():
    status, msg = health(obj("Running", conditions=[
        {"type": "Updated", "status": "False", "reason": "BackupFailed", "message": "held: backup failed"}]))
    assert (status, msg) == ("Degraded", "held: backup failed")
