"""No accepted input without an answer: what admission can see is refused there with a message;
what only the API server or the operator can see ends as Valid=False with the reason and a
Warning Event, builds nothing, and is not retried until something changes."""
from __future__ import annotations

import os
import time

import pytest

from gs_helpers import (apply_as_user, condition, events_for, gameserver, operator_writes,
                        wait_phase)
from kube_helpers import api_error, message, wait_for


@pytest.mark.parametrize("name,spec,words", [
    ("7dtd", {}, "must start with a letter"),
    ("a" * 64, {}, "at most 63 characters"),
    ("escaping-ref", {"settings": [
        {"type": "env", "name": "e", "secretRef": {"name": "../configmaps/x"}}]},
     "spec.settings[0].secretRef.name"),
    ("empty-ref", {"settings": [{"type": "env", "name": "e", "secretRef": {"name": ""}}]},
     "spec.settings[0].secretRef.name"),
    ("zero-disk", {"storage": {"size": "0"}}, "spec.storage.size"),
    ("bad-class", {"storage": {"storageClassName": "Fast Disks"}}, "spec.storage.storageClassName"),
    ("spaced-image", {"image": "repo/game:1 latest"}, "spec.image"),
    ("ftp-store", {"backup": {"store": {"s3": {"endpoint": "ftp://10.0.0.1", "bucket": "b1"},
                                        "secretRef": {"name": "keys"}}}},
     "spec.backup.store.s3.endpoint"),
    ("keyless-store", {"backup": {"store": {"s3": {"endpoint": "http://10.0.0.1:8333",
                                                   "bucket": "b1"}}}},
     "secretRef"),
    ("bad-annotation", {"network": {"annotations": {"not a key!": "x"}}}, "annotation keys"),
    ("portless-probe", {"uptime": {"idle": {"after": "5m", "probeAddress": "10.0.0.1"}}},
     "spec.uptime.idle.probeAddress"),
])
def test_admission_refuses_what_cannot_become_children(kube, namespace, crds, name, spec, words):
    obj = gameserver(name, namespace, **spec)
    obj["metadata"]["name"] = name
    e = api_error(lambda: kube.create(obj))
    assert e is not None and e.status == 422, (name, e)
    assert words in message(e), message(e)


def test_env_with_both_content_and_a_secret_is_a_condition_not_a_silent_drop(
        kube, namespace, operator):
    apply_as_user(kube, gameserver("both", namespace, settings=[
        {"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"},
         "secretRef": {"name": "other"}}]))
    valid = condition(wait_phase(kube, namespace, "both", "Error"), "Valid")
    assert valid["reason"] == "InvalidSetting" and "not both" in valid["message"]


def test_resources_the_api_would_refuse_are_a_condition_before_anything_is_written(
        kube, namespace, operator):
    apply_as_user(kube, gameserver("hungry", namespace, resources={
        "requests": {"memory": "8Gi"}, "limits": {"memory": "4Gi"}}))
    gs = wait_phase(kube, namespace, "hungry", "Error")
    valid = condition(gs, "Valid")
    assert valid["reason"] == "InvalidResources" and "above its limit" in valid["message"]
    assert kube.get("Deployment", namespace, "hungry") is None


def test_a_child_the_api_server_refuses_is_said_once_and_not_retried(kube, namespace, operator):
    if os.environ.get("KUBECONFIG"):
        pytest.skip("counting writes reads the test bed's audit log")
    port = 30000 + (abs(hash(namespace)) % 2700)
    apply_as_user(kube, gameserver("first", namespace, network={
        "type": "NodePort", "nodePorts": {"game": port}}))
    wait_phase(kube, namespace, "first", "Running")
    apply_as_user(kube, gameserver("second", namespace, network={
        "type": "NodePort", "nodePorts": {"game": port}}))
    gs = wait_phase(kube, namespace, "second", "Error")
    valid = condition(gs, "Valid")
    assert valid["reason"] == "Rejected" and "Service second" in valid["message"]
    assert "already allocated" in valid["message"]
    # Nothing half-built: no server runs unreachable, and no Secret or claim waits for it.
    for kind, child in (("Deployment", "second"), ("Secret", "second-env"),
                        ("PersistentVolumeClaim", "second-data"), ("Service", "second")):
        assert kube.get(kind, namespace, child) is None, kind
    wait_for("a Warning event", lambda: [e for e in events_for(kube, namespace, "second")
                                         if e["type"] == "Warning" and e["reason"] == "Rejected"])
    time.sleep(2)
    before = len(operator_writes(namespace))
    time.sleep(8)  # a retry loop would write (and fail) again in this time
    assert len(operator_writes(namespace)) == before
    # A change of spec is the answer, and it is taken at once.
    apply_as_user(kube, gameserver("second", namespace, network={"type": "NodePort"}))
    wait_phase(kube, namespace, "second", "Running")


def test_a_claim_over_quota_takes_the_first_build_back_and_says_so_once(kube, namespace, operator):
    if os.environ.get("KUBECONFIG"):
        pytest.skip("counting writes reads the test bed's audit log")
    kube.create({"apiVersion": "v1", "kind": "ResourceQuota",
                 "metadata": {"name": "storage", "namespace": namespace},
                 "spec": {"hard": {"requests.storage": "100Gi"}}})
    # The claim comes last in a first build; the Secret, ConfigMap, Service and Deployment made
    # before it are deleted again when it is refused.
    settings = [{"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"}},
                {"type": "txt", "name": "motd.txt", "content": "hi"}]
    apply_as_user(kube, gameserver("huge", namespace, settings=settings, storage={"size": "200Gi"}))
    gs = wait_phase(kube, namespace, "huge", "Error")
    valid = condition(gs, "Valid")
    assert valid["reason"] == "Rejected" and "PersistentVolumeClaim huge-data" in valid["message"]
    assert "exceeded quota" in valid["message"]
    made = {("Secret", "huge-env"), ("ConfigMap", "huge-config"), ("Service", "huge"),
            ("Deployment", "huge"), ("PersistentVolumeClaim", "huge-data")}
    wait_for("the first build taken back", lambda: all(kube.get(k, namespace, n) is None
                                                       for k, n in made))
    def writes() -> list[tuple[str, str]]:
        return [(w["objectRef"]["resource"], w["verb"]) for w in operator_writes(namespace)
                if w["objectRef"]["resource"] != "events"]
    assert {("deployments", "delete"), ("services", "delete"), ("secrets", "delete"),
            ("configmaps", "delete")} <= set(writes())
    # Said once: the take-back's own watch events do not build and take back again.
    time.sleep(2)
    before = len(writes())
    time.sleep(8)
    assert len(writes()) == before
    # A size within the quota is the answer.
    apply_as_user(kube, gameserver("huge", namespace, settings=settings, storage={"size": "50Gi"}))
    wait_phase(kube, namespace, "huge", "Running")


def test_a_server_whose_game_is_deleted_says_what_runs_and_still_stops(kube, namespace, crds,
                                                                        operator):
    import copy
    import pathlib

    import yaml
    game = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "examples" / "games"
                           / "valheim.yaml").read_text())
    game = copy.deepcopy(game)
    game["metadata"] = {"name": f"vanishing-{namespace}"}
    game["spec"].pop("aliases", None)
    kube.apply(game)
    try:
        apply_as_user(kube, gameserver("orphan", namespace, gameUid=game["metadata"]["name"]))
        wait_phase(kube, namespace, "orphan", "Running")
        kube.delete("Game", None, game["metadata"]["name"])
        gs = wait_for("Valid=False", lambda: (lambda g: g if condition(g, "Valid")["status"] == "False"
                                              else None)(kube.get("GameServer", namespace, "orphan")))
        # The pod built before still runs, and the phase says so; the condition says why.
        assert gs["status"]["phase"] == "Running"
        assert condition(gs, "Valid")["reason"] == "UnknownGame"
        apply_as_user(kube, gameserver("orphan", namespace, gameUid=game["metadata"]["name"],
                                       state="Stopped"))
        wait_for("scaled to zero", lambda: kube.get("Deployment", namespace, "orphan")["spec"]["replicas"] == 0)
        g = wait_phase(kube, namespace, "orphan", "Stopped")
        assert condition(g, "Valid")["status"] == "False"
    finally:
        kube.delete("Game", None, game["metadata"]["name"])


def test_a_backup_whose_volume_cannot_be_made_fails_and_says_why(kube, namespace, operator):
    from gs_helpers import backup, run_phase
    # One claim allowed: the world's. The backup volume is refused by the quota.
    kube.create({"apiVersion": "v1", "kind": "ResourceQuota",
                 "metadata": {"name": "one-claim", "namespace": namespace},
                 "spec": {"hard": {"persistentvolumeclaims": "1"}}})
    apply_as_user(kube, gameserver("cramped", namespace))
    wait_phase(kube, namespace, "cramped", "Running")
    kube.create(backup("cramped-b1", namespace, "cramped"))
    st = run_phase(kube, "GameServerBackup", namespace, "cramped-b1", "Failed")
    assert "backup volume cannot be created" in st["message"]
    assert "exceeded quota" in st["message"]
    wait_for("a Warning event", lambda: [e for e in kube.list("Event", namespace)
                                         if e["type"] == "Warning" and e["reason"] == "BackupFailed"])
    assert kube.get("PersistentVolumeClaim", namespace, "cramped-backups") is None


def test_a_world_that_cannot_grow_says_so_instead_of_retrying(kube, namespace, operator):
    """Found by the fuzz suite: a bigger size on a claim whose class cannot expand was refused
    with a 403 and retried forever, the server silent."""
    apply_as_user(kube, gameserver("grow", namespace, storage={"size": "1Gi"}))
    wait_phase(kube, namespace, "grow", "Running")
    apply_as_user(kube, gameserver("grow", namespace, storage={"size": "2Gi"}))
    valid = wait_for("the refusal", lambda: (lambda c: c if c.get("reason") == "Rejected" else None)(
        next((c for c in (kube.status_of("GameServer", namespace, "grow").get("conditions") or [])
              if c["type"] == "Valid"), {})))
    assert "PersistentVolumeClaim grow-data" in valid["message"] and "resized" in valid["message"]


def test_a_game_no_pod_can_be_built_from_says_so_itself_and_so_do_its_servers(
        kube, namespace, crds, operator):
    import copy
    import pathlib

    import yaml
    game = copy.deepcopy(yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "examples"
                                         / "games" / "valheim.yaml").read_text()))
    uid = f"broken-{namespace}"
    game["metadata"] = {"name": uid}
    game["spec"].pop("aliases", None)
    good_resources = game["spec"].get("resources")
    game["spec"]["resources"] = {"requests": {"cpu": "banana"}}
    kube.apply(game)
    try:
        apply_as_user(kube, gameserver("uses-broken", namespace, gameUid=uid))
        gs = wait_for("the server's Valid=False", lambda: (lambda o: o if condition(o, "Valid").get(
            "status") == "False" else None)(kube.get("GameServer", namespace, "uses-broken")))
        assert condition(gs, "Valid")["reason"] == "InvalidGame"
        assert f"Game {uid}" in condition(gs, "Valid")["message"]
        assert kube.get("Deployment", namespace, "uses-broken") is None
        # The Game itself says so (`kubectl get games` shows Valid), judged by the operator
        # whose server uses it.
        g = wait_for("the Game's Valid=False", lambda: (lambda o: o if condition(o, "Valid").get(
            "status") == "False" else None)(kube.get("Game", None, uid)))
        valid = condition(g, "Valid")
        assert valid["reason"] == "InvalidGame" and "spec.resources" in valid["message"] \
            and "banana" in valid["message"], valid
        assert g["status"]["observedGeneration"] == g["metadata"]["generation"]
        # Mended, the Game and its server both say so; the operator never wrote the Game's spec.
        game["spec"]["resources"] = good_resources or {}
        kube.apply(game)
        g = wait_for("the Game's Valid=True", lambda: (lambda o: o if condition(o, "Valid").get(
            "status") == "True" else None)(kube.get("Game", None, uid)))
        assert g["status"]["observedGeneration"] == g["metadata"]["generation"] == 2
        wait_phase(kube, namespace, "uses-broken", "Running")
    finally:
        kube.delete("Game", None, uid)


def test_a_store_whose_secret_lacks_a_key_is_said_before_any_backup(kube, namespace, operator):
    kube.create({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "half-keys", "namespace": namespace},
                 "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}})
    store = {"s3": {"endpoint": "http://127.0.0.1:9", "bucket": "peon-backups"},
             "secretRef": {"name": "half-keys"}}
    apply_as_user(kube, gameserver("offsite", namespace, backup={"store": store}))
    gs = wait_for("Valid=False", lambda: (lambda g: g if condition(g, "Valid").get("status") == "False"
                                          else None)(kube.get("GameServer", namespace, "offsite")))
    valid = condition(gs, "Valid")
    assert valid["reason"] == "InvalidBackupStore" and "lacks RESTIC_PASSWORD" in valid["message"]
    # The key added, the server is judged again (the store's Secret is watched) and runs.
    kube.raw("PATCH", f"/api/v1/namespaces/{namespace}/secrets/half-keys",
             {"stringData": {"RESTIC_PASSWORD": "p"}}, content_type="application/merge-patch+json")
    wait_phase(kube, namespace, "offsite", "Running")
