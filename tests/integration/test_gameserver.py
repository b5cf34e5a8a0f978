"""A GameServer becomes a running server, against the real control plane, with the operator
running as users run it (a `peon-operator` process)."""
import base64
import json
import os
import subprocess
import sys
import time

import pytest

from gs_helpers import (ROOT, apply_as_user, condition, events_for, gameserver, operator_writes,
                        wait_event, wait_phase)
from kube_helpers import api_error, message, wait_for

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def audit():
    if os.environ.get("KUBECONFIG"):
        pytest.skip("counting writes reads the test bed's audit log")
    return operator_writes


def children(kube, ns, name):
    return {
        "Secret": kube.get("Secret", ns, f"{name}-env"),
        "ConfigMap": kube.get("ConfigMap", ns, f"{name}-config"),
        "PersistentVolumeClaim": kube.get("PersistentVolumeClaim", ns, f"{name}-data"),
        "Deployment": kube.get("Deployment", ns, name),
        "Service": kube.get("Service", ns, name),
    }


def test_seed_payload_converts_applies_and_runs(kube, kubectl, namespace):
    yaml_text = subprocess.run([sys.executable, "-m", "peon.commands", "convert", "-n", namespace,
                                str(ROOT / "examples" / "peon-payload.json")],
                               capture_output=True, text=True, check=True).stdout
    kubectl("apply", "-f", "-", input=yaml_text)
    gs = wait_phase(kube, namespace, "server01", "Running")
    assert gs["status"]["game"] == "valheim"  # PEON's `valhiem` found through the alias
    kids = children(kube, namespace, "server01")
    assert all(kids.values()), {k: bool(v) for k, v in kids.items()}
    secret = kids["Secret"]["data"]
    assert base64.b64decode(secret["PASSWORD"]).decode() == "password123"
    cm = kids["ConfigMap"]["data"]
    assert json.loads(cm["config.json"]) == {"somekey": "somevalue"}
    assert cm["textfile.txt"] == "Some random text. With a \ttabspace & and a \nnewline."
    assert kids["PersistentVolumeClaim"]["status"]["phase"] == "Bound"
    dep = kids["Deployment"]
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "server01-env"}} in c["envFrom"]
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {
        "/config", "/config/peon/config.json", "/config/peon/textfile.txt"}
    assert [(p["port"], p["protocol"]) for p in kids["Service"]["spec"]["ports"]] == [
        (2456, "UDP"), (2457, "UDP"), (2458, "UDP")]
    for kind in ("Secret", "ConfigMap", "Deployment", "Service"):
        ref = kids[kind]["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["controller"]) == ("GameServer", "server01", True)
    assert "ownerReferences" not in kids["PersistentVolumeClaim"]["metadata"]  # the world stays
    # Endpoints name every port with its protocol; kubectl shows the summary column.
    assert {e["name"] for e in gs["status"]["endpoints"]} == {"game", "query", "crossplay"}
    out = kubectl("get", "pgs", "-n", namespace).stdout
    assert "GAME" in out and "PHASE" in out and "ENDPOINT" in out and "Running" in out
    assert "password123" not in json.dumps(gs["status"])


def test_admission_refuses_bad_specs_with_clear_messages(kube, namespace, crds):
    cases = [
        (dict(state="Paused"), "Unsupported value: \"Paused\""),
        (dict(settings=[{"type": "txt", "name": "../../etc/passwd", "content": "x"}]),
         "plain file name"),
        (dict(settings=[{"type": "txt", "name": "a.txt", "content": "x", "path": "relative/a.txt"}]),
         "absolute file path"),
        (dict(settings=[{"type": "txt", "name": "a.txt", "content": "x", "path": "/data/../etc/a"}]),
         "absolute file path"),
        (dict(settings=[{"type": "json", "name": "c.json", "secretRef": {"name": "s"}}]),
         "secretRef is for env settings"),
        (dict(settings=[{"type": "env", "name": "e", "content": {"A": "1"}},
                        {"type": "env", "name": "e", "content": {"B": "2"}}]), "Duplicate value"),
        (dict(settings=[{"type": "ini", "name": "x.ini", "content": "x"}]), "Unsupported value"),
        (dict(gameUid="Not A Uid"), "gameUid"),
    ]
    for i, (spec, words) in enumerate(cases):
        obj = gameserver(f"bad-{i}", namespace, **spec)
        e = api_error(lambda: kube.create(obj))
        assert e.status == 422, (spec, e.status)
        assert words in message(e), (spec, message(e))


def test_admission_refuses_bad_maintenance_and_a_console_port_that_is_not_the_games(
        kube, namespace, crds):
    cases = [
        (dict(maintenance={"maxDelay": "soon"}), "maxDelay"),
        (dict(maintenance={"maxDelay": ""}), "maxDelay is a duration"),
        (dict(maintenance={"warnings": ["0m"]}), "a warning is a duration such as 10m"),
        (dict(maintenance={"policy": "Whenever"}), "Unsupported value"),
        (dict(maintenance={"restartSchedule": {"cron": "0 4 * *"}}), "cron has five fields"),
    ]
    for i, (spec, words) in enumerate(cases):
        e = api_error(lambda: kube.create(gameserver(f"bad-m{i}", namespace, **spec)))
        assert e.status == 422 and words in message(e), (spec, message(e))
    game = {"apiVersion": "peon.dev/v1alpha1", "kind": "Game", "metadata": {"name": "bad-console"},
            "spec": {"image": "x", "dataPath": "/data", "ports": [
                {"name": "game", "containerPort": 2456, "protocol": "UDP"}],
                "console": {"protocol": "rcon", "port": "game", "passwordKey": "RCON_PASSWORD"}}}
    assert "console.port must name one of the Game's TCP ports" in message(
        api_error(lambda: kube.create(game)))
    game["spec"]["console"]["port"] = "rcon"
    assert "console.port must name one of the Game's TCP ports" in message(
        api_error(lambda: kube.create(game)))
    game["spec"]["console"] = {"protocol": "rcon", "say": "say it"}
    text = message(api_error(lambda: kube.create(game)))
    assert "names its port and its passwordKey" in text and "say must contain {message}" in text


def test_game_port_rules_are_enforced(kube, crds):
    game = {"apiVersion": "peon.dev/v1alpha1", "kind": "Game", "metadata": {"name": "bad-ports"},
            "spec": {"image": "x", "dataPath": "/data", "ports": [
                {"name": "game", "containerPort": 70000, "protocol": "UDP"}]}}
    assert "70000" in message(api_error(lambda: kube.create(game)))
    game["spec"]["ports"] = [{"name": "a", "containerPort": 1, "protocol": "UDP"},
                             {"name": "b", "containerPort": 1, "protocol": "UDP"}]
    assert "each containerPort and protocol pair may appear once" in message(
        api_error(lambda: kube.create(game)))


def test_stop_start_restart_and_the_world_stays(kube, namespace):
    name = "cycle"
    kube.create(gameserver(name, namespace))
    wait_phase(kube, namespace, name, "Running")
    claim_uid = kube.get("PersistentVolumeClaim", namespace, f"{name}-data")["metadata"]["uid"]

    apply_as_user(kube, gameserver(name, namespace, state="Stopped"))
    gs = wait_phase(kube, namespace, name, "Stopped")
    assert kube.get("Deployment", namespace, name)["spec"]["replicas"] == 0
    wait_for("no pods", lambda: kube.list("Pod", namespace, f"peon.dev/gameserver={name}") == [] or None)
    assert condition(gs, "Ready")["status"] == "False"

    apply_as_user(kube, gameserver(name, namespace, state="Running"))
    wait_phase(kube, namespace, name, "Running")
    assert kube.get("PersistentVolumeClaim", namespace, f"{name}-data")["metadata"]["uid"] == claim_uid

    # restart: the annotation `kubectl rollout restart` would set, on the GameServer.
    before = kube.get("Deployment", namespace, name)["metadata"]["generation"]
    kube.raw("PATCH", f"/apis/peon.dev/v1alpha1/namespaces/{namespace}/gameservers/{name}",
             {"metadata": {"annotations": {"peon.dev/restartedAt": "2026-11-28T12:00:00Z"}}},
             content_type="application/merge-patch+json")
    dep = wait_for("a new rollout", lambda: (lambda d: d if d["metadata"]["generation"] > before
                                             else None)(kube.get("Deployment", namespace, name)))
    assert dep["spec"]["template"]["metadata"]["annotations"]["peon.dev/restartedAt"] == \
        "2026-11-28T12:00:00Z"
    # What the operator did is in Events; the phase is in the status, not repeated as Events.
    wait_event(kube, namespace, name, "Applied")
    reasons = [e["reason"] for e in events_for(kube, namespace, name)]
    assert not {"Stopped", "Running", "Pending", "Starting"} & set(reasons)


def test_changed_setting_and_new_image_roll_the_server(kube, namespace):
    name = "roll"
    apply_as_user(kube, gameserver(name, namespace, settings=[
        {"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}},
        {"type": "txt", "name": "motd.txt", "content": "hello"}]))
    wait_phase(kube, namespace, name, "Running")
    tmpl = lambda: kube.get("Deployment", namespace, name)["spec"]["template"]
    h1 = tmpl()["metadata"]["annotations"]["peon.dev/settings-hash"]
    apply_as_user(kube, gameserver(name, namespace, settings=[
        {"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}},
        {"type": "txt", "name": "motd.txt", "content": "hello again"}]))
    wait_for("the settings hash to change",
             lambda: tmpl()["metadata"]["annotations"]["peon.dev/settings-hash"] != h1)
    assert kube.get("ConfigMap", namespace, f"{name}-config")["data"]["motd.txt"] == "hello again"
    wait_phase(kube, namespace, name, "Running")
    apply_as_user(kube, gameserver(name, namespace, image="ghcr.io/lloesche/valheim-server:v2",
                                   settings=[{"type": "env", "name": "env",
                                              "content": {"SERVER_PASS": "hunter22"}}]))
    wait_for("the new image", lambda: tmpl()["spec"]["containers"][0]["image"] ==
             "ghcr.io/lloesche/valheim-server:v2")
    # The update waited for a pre-update backup; status follows the rollout's reconcile.
    wait_for("status.image", lambda: kube.status_of("GameServer", namespace, name).get("image")
             == "ghcr.io/lloesche/valheim-server:v2")
    wait_phase(kube, namespace, name, "Running")


def test_a_new_game_image_rolls_its_servers(kube, namespace, crds):
    game = json.loads(json.dumps(kube.get("Game", None, "factorio")))
    game = {"apiVersion": "peon.dev/v1alpha1", "kind": "Game",
            "metadata": {"name": "factorio-test"}, "spec": game["spec"]}
    kube.apply(game)
    kube.create(gameserver("fact", namespace, gameUid="factorio-test", settings=[]))
    wait_phase(kube, namespace, "fact", "Running")
    game["spec"]["image"] = "factoriotools/factorio:2.0.99"
    kube.apply(game)
    wait_for("the game's new image on the server", lambda: kube.get("Deployment", namespace, "fact")
             ["spec"]["template"]["spec"]["containers"][0]["image"] == "factoriotools/factorio:2.0.99")
    kube.delete("Game", None, "factorio-test")


def test_drift_is_undone(kube, namespace):
    name = "drift"
    kube.create(gameserver(name, namespace))
    wait_phase(kube, namespace, name, "Running")
    svc_uid = kube.get("Service", namespace, name)["metadata"]["uid"]
    kube.delete("Service", namespace, name)
    wait_for("the Service to come back", lambda: (kube.get("Service", namespace, name) or {})
             .get("metadata", {}).get("uid") not in (None, svc_uid))
    # Someone scales the server by hand: the spec says Running, so one replica it is.
    kube.raw("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
             {"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
    wait_for("replicas back to 1",
             lambda: kube.get("Deployment", namespace, name)["spec"]["replicas"] == 1)
    # Someone edits a setting in the Secret by hand.
    kube.raw("PATCH", f"/api/v1/namespaces/{namespace}/secrets/{name}-env",
             {"data": {"SERVER_PASS": base64.b64encode(b"changed").decode()}},
             content_type="application/merge-patch+json")
    wait_for("the Secret restored", lambda: base64.b64decode(
        kube.get("Secret", namespace, f"{name}-env")["data"]["SERVER_PASS"]) == b"hunter22")


def test_nothing_is_written_when_nothing_changed(kube, namespace, audit):
    name = "quiet"
    kube.create(gameserver(name, namespace))
    wait_phase(kube, namespace, name, "Running")
    time.sleep(2)  # let the last watch events of the start settle
    before = len(audit(namespace))
    # Events that change nothing the operator owns: a label on the GameServer, a label on the
    # Deployment; each makes it reconcile, and each reconcile must find nothing to do.
    kube.raw("PATCH", f"/apis/peon.dev/v1alpha1/namespaces/{namespace}/gameservers/{name}",
             {"metadata": {"labels": {"team": "blue"}}}, content_type="application/merge-patch+json")
    kube.raw("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
             {"metadata": {"labels": {"team": "blue"}}}, content_type="application/merge-patch+json")
    time.sleep(5)
    after = audit(namespace)
    assert len(after) == before, [(e["verb"], e["objectRef"]) for e in after[before:]]


def test_operator_never_writes_spec_and_adds_nothing_to_metadata(kube, namespace):
    name = "gitops"
    kube.create(gameserver(name, namespace))
    gs = wait_phase(kube, namespace, name, "Running")
    assert not gs["metadata"].get("finalizers")
    assert not any(k.startswith("kopf.") for k in (gs["metadata"].get("annotations") or {}))
    for mf in gs["metadata"]["managedFields"]:
        if mf["manager"] != "kubectl" and mf["manager"] != "OpenAPI-Generator":
            assert mf.get("subresource") == "status", mf


@pytest.mark.parametrize("spec, reason, words", [
    (dict(gameUid="tetris"), "UnknownGame", "no Game named 'tetris'"),
    (dict(settings=[]), "MissingVariable", "requires SERVER_PASS"),
    (dict(settings=[{"type": "env", "name": "e", "content": {"SERVER_PASS": 12345}}]),
     "InvalidSetting", "must be a string"),
    (dict(settings=[{"type": "env", "name": "e", "secretRef": {"name": "nope"}}]),
     "SecretNotFound", "'nope'"),
    (dict(maintenance={"restartSchedule": {"cron": "0 0 31 2 *"}}),  # February 31st
     "InvalidMaintenance", "never fires"),
])
def test_unbuildable_server_is_a_condition_and_an_event_and_builds_nothing(
        kube, namespace, spec, reason, words):
    kube.create(gameserver("broken", namespace, **spec))
    gs = wait_phase(kube, namespace, "broken", "Error")
    valid = condition(gs, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", reason) and words in valid["message"]
    assert valid["observedGeneration"] == gs["metadata"]["generation"]
    wait_for("a Warning event", lambda: [e for e in events_for(kube, namespace, "broken")
                                         if e["type"] == "Warning" and e["reason"] == reason])
    assert not any(children(kube, namespace, "broken").values())


def test_a_missing_secret_heals_when_it_appears_and_its_changes_roll(kube, namespace):
    name = "later"
    kube.create(gameserver(name, namespace, settings=[
        {"type": "env", "name": "pw", "secretRef": {"name": "later-pw"}}]))
    wait_phase(kube, namespace, name, "Error")
    kube.create({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "later-pw", "namespace": namespace},
                 "stringData": {"SERVER_PASS": "hunter22"}})
    wait_phase(kube, namespace, name, "Running")
    assert kube.get("Secret", namespace, f"{name}-env") is None  # nothing copied
    tmpl = lambda: kube.get("Deployment", namespace, name)["spec"]["template"]["metadata"]
    h1 = tmpl()["annotations"]["peon.dev/settings-hash"]
    kube.raw("PATCH", f"/api/v1/namespaces/{namespace}/secrets/later-pw",
             {"stringData": {"SERVER_PASS": "hunter23"}}, content_type="application/merge-patch+json")
    wait_for("a roll after the Secret changed",
             lambda: tmpl()["annotations"]["peon.dev/settings-hash"] != h1)
    # The Error → Running path wrote one Warning for the missing Secret, not a storm.
    warnings = [e for e in events_for(kube, namespace, name) if e["reason"] == "SecretNotFound"]
    assert sum(e.get("count", 1) for e in warnings) == 1


def test_destroy_keeps_the_world_and_a_new_server_adopts_it(kube, namespace):
    name = "phoenix"
    kube.create(gameserver(name, namespace))
    wait_phase(kube, namespace, name, "Running")
    claim = kube.get("PersistentVolumeClaim", namespace, f"{name}-data")
    kube.delete("GameServer", namespace, name)
    wait_for("children collected", lambda: kube.get("Deployment", namespace, name) is None
             and kube.get("Service", namespace, name) is None)
    assert kube.get("PersistentVolumeClaim", namespace, f"{name}-data")["metadata"]["uid"] == \
        claim["metadata"]["uid"]
    kube.create(gameserver(name, namespace))
    wait_phase(kube, namespace, name, "Running")
    dep = kube.get("Deployment", namespace, name)
    vols = dep["spec"]["template"]["spec"]["volumes"]
    assert vols[0]["persistentVolumeClaim"]["claimName"] == f"{name}-data"
    assert kube.get("PersistentVolumeClaim", namespace, f"{name}-data")["metadata"]["uid"] == \
        claim["metadata"]["uid"]


def test_eradicate_deletes_the_world(kube, namespace):
    name = "gone"
    kube.create(gameserver(name, namespace, storage={"retainOnDelete": False}))
    wait_phase(kube, namespace, name, "Running")
    assert kube.get("PersistentVolumeClaim", namespace, f"{name}-data")
    kube.delete("GameServer", namespace, name)
    wait_for("the world to be deleted",
             lambda: kube.get("PersistentVolumeClaim", namespace, f"{name}-data") is None)


def test_existing_claim_is_adopted_once_labelled_for_its_server(kube, namespace):
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "imported-world", "namespace": namespace},
                 "spec": {"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "1Gi"}}}})
    kube.create(gameserver("imported", namespace, storage={"existingClaim": "imported-world"}))
    # Naming a claim is not enough: backups would read it and restores overwrite it as root.
    gs = wait_phase(kube, namespace, "imported", "Error")
    valid = condition(gs, "Valid")
    assert valid["reason"] == "ClaimNotAllowed" and "label pvc imported-world" in valid["message"]
    assert kube.get("Deployment", namespace, "imported") is None
    wait_for("a Warning", lambda: [e for e in events_for(kube, namespace, "imported")
                                   if e["reason"] == "ClaimNotAllowed"])
    kube.raw("PATCH", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/imported-world",
             {"metadata": {"labels": {"app.kubernetes.io/managed-by": "peon-operator",
                                      "peon.dev/gameserver": "imported"}}},
             content_type="application/merge-patch+json")
    wait_phase(kube, namespace, "imported", "Running")
    assert kube.get("PersistentVolumeClaim", namespace, "imported-data") is None
    vols = kube.get("Deployment", namespace, "imported")["spec"]["template"]["spec"]["volumes"]
    assert vols[0]["persistentVolumeClaim"]["claimName"] == "imported-world"
