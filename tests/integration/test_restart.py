"""An operator restart on a converged cluster writes nothing and posts nothing: GitOps tools and
audit logs see a restart as a non-event. (Primed list items lacked apiVersion, so every child
once differed from its rendered self and was applied again, with an "applied" Event.)"""
from __future__ import annotations

import os
import time
import uuid

import pytest

from conftest import Operator
from gs_helpers import apply_as_user, gameserver, operator_writes, wait_phase
from kube_helpers import wait_for


def test_a_restarted_operator_on_a_converged_cluster_writes_and_posts_nothing(
        kube, kubeconfig, crds, tmp_path):
    if os.environ.get("KUBECONFIG"):
        pytest.skip("counting writes reads the test bed's audit log")
    ns = f"rs-{uuid.uuid4().hex[:8]}"  # not t-*: the session's operator must not see it
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    args = ["--namespace", ns, "--job-image", "peon.invalid/peon-operator:test"]
    first = Operator(kubeconfig, tmp_path / "first.log", args)
    try:
        apply_as_user(kube, gameserver("full", ns, settings=[
            {"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}},
            {"type": "json", "name": "a.json", "content": {"k": [1, 2]}},
            {"type": "txt", "name": "motd.txt", "content": "hi\n"}],
            network={"type": "NodePort"}))
        apply_as_user(kube, gameserver("idle", ns, state="Stopped"))
        wait_phase(kube, ns, "full", "Running")
        wait_phase(kube, ns, "idle", "Stopped")
        time.sleep(3)  # the last watch events of the start settle
    finally:
        first.stop()
    writes, events = len(operator_writes(ns)), len(kube.list("Event", ns))

    second = Operator(kubeconfig, tmp_path / "second.log", args)
    try:
        time.sleep(10)  # primed, every server reconciled
        new = operator_writes(ns)[writes:]
        assert new == [], [(e["verb"], e["objectRef"]) for e in new]
        assert len(kube.list("Event", ns)) == events
        # The second operator is at work all the same: a real change is carried out.
        apply_as_user(kube, gameserver("full", ns, state="Stopped", settings=[
            {"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}},
            {"type": "json", "name": "a.json", "content": {"k": [1, 2]}},
            {"type": "txt", "name": "motd.txt", "content": "hi\n"}],
            network={"type": "NodePort"}))
        wait_for("the stop", lambda: kube.get("Deployment", ns, "full")["spec"]["replicas"] == 0)
    finally:
        second.stop()
        kube.delete("Namespace", None, ns)
    assert "Traceback" not in second.log()
