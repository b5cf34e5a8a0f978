"""RBAC is proven, not guessed: the operator, logged in as the chart's ServiceAccount (not
admin), takes a server through its whole life; the API server's audit log then shows it used
exactly the verbs the chart grants, no fewer (it would have been refused) and no more; and what
the API server says the account may do (SelfSubjectRulesReview) is exactly what it used."""
import json
import os
import pathlib
import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from api_helpers import PeonApi
from conftest import Operator
from gs_helpers import (AUDIT, apply_as_user, backup, condition, gameserver, restore, run_phase,
                        token_kubeconfig, wait_phase)
from kube_helpers import K, api_error, client_for, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
# A 403 in a log, as a status (not the digits inside a request's duration, "0.007403s").
FORBIDDEN = re.compile(r"\b403\b")
CHART = ROOT / "charts" / "peon-operator"


def granted_rules(rendered: str, api: bool = False) -> set[tuple[str, str, str]]:
    """The rules of the operator's roles in the rendered chart (with `api`, the PEON API's)."""
    out = set()
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] in ("ClusterRole", "Role") and \
                doc["metadata"]["name"].endswith("-api") == api:
            for r in doc["rules"]:
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        for v in r["verbs"]:
                            out.add((g, res, v))
    return out


def allowed_rules(kubeconfig: str, namespaces: list[str]) -> set[tuple[str, str, str]]:
    """What the account behind `kubeconfig` may do in these namespaces (and cluster-wide), as
    the API server itself lists it (SelfSubjectRulesReview, `kubectl auth can-i --list`)."""
    k = K(client_for(kubeconfig))
    out = set()
    for ns in namespaces:
        review = k.raw("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                       {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                        "spec": {"namespace": ns}})
        assert not review["status"].get("incomplete"), review["status"]
        for r in review["status"]["resourceRules"]:
            out |= {(g, res, v) for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    return out


def token_for(kube, ns: str, sa: str) -> str:
    return kube.raw("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": 3600}})["status"]["token"]


def used_rules(username: str, agents: tuple[str, ...] = ("peon-operator", "kopf")
               ) -> set[tuple[str, str, str]]:
    out = set()
    for line in AUDIT.read_text().splitlines():
        e = json.loads(line)
        if e["user"]["username"] != username:
            continue
        # The client's websocket (exec) sends no User-Agent; every other call of the
        # operator's names it.
        ours = e.get("userAgent", "").startswith(agents) or (
            "userAgent" not in e and (e.get("objectRef") or {}).get("subresource") == "exec")
        if not ours:
            continue  # the test's own calls as that account (its rules reviews)
        o = e.get("objectRef") or {}
        if not o.get("resource"):
            continue  # discovery
        res = o["resource"] + (f"/{o['subresource']}" if o.get("subresource") else "")
        out.add((o.get("apiGroup", ""), res, e["verb"]))
        if e["verb"] == "patch" and (e.get("responseStatus") or {}).get("code") == 201:
            out.add((o.get("apiGroup", ""), res, "create"))  # server-side apply created it
    return out


def secret_reads(username: str, agents: tuple[str, ...] = ("peon-operator", "kopf")) -> list[str]:
    """The request URIs of every list and watch of Secrets the account made."""
    out = []
    for line in AUDIT.read_text().splitlines():
        e = json.loads(line)
        o = e.get("objectRef") or {}
        if e["user"]["username"] == username and e.get("userAgent", "").startswith(agents) \
                and o.get("resource") == "secrets" and e["verb"] in ("list", "watch"):
            out.append(e["requestURI"])
    return out


def assert_exactly_used(used: set, granted: set, allowed: set) -> None:
    """What an account used is what its chart grants and what the API server allows it."""
    # An exec is a websocket GET; servers from 1.35 also ask it for create.
    newer = {("", "pods/exec", "create")}
    assert ("", "pods/exec", "get") in used and newer <= granted
    granted, allowed = granted - newer, allowed - newer
    assert used - granted == set(), f"used but not granted: {sorted(used - granted)}"
    assert granted - used == set(), f"granted but never used: {sorted(granted - used)}"
    assert allowed == used, f"the API server allows {sorted(allowed - used)} unused, " \
                            f"refuses {sorted(used - allowed)}"


def test_the_operator_needs_exactly_the_charts_rbac(kube, kubectl, kubeconfig, helm, crds,
                                                     tmp_path):
    if os.environ.get("KUBECONFIG"):
        pytest.skip("reads the test bed's audit log")
    sys_ns, ns = f"peon-{uuid.uuid4().hex[:6]}", f"rbac-{uuid.uuid4().hex[:6]}"
    for n in (sys_ns, ns):
        kubectl("create", "namespace", n)
    # Two replicas, so the chart grants (and the operator uses) leader election's Lease too.
    values = ["--set", "watchNamespaces={" + ns + "}", "--set", "catalogue.install=false",
              "--set", "replicas=2",
              # The update below names an image of its own: the install's policy allows it.
              "--set", "policy.images={ghcr.io/lloesche/}"]
    rendered = helm("template", "rbac", str(CHART), "-n", sys_ns, *values).stdout
    helm("install", "rbac", str(CHART), "-n", sys_ns, *values)
    sa = "rbac-peon-operator"
    kc = token_kubeconfig(kubeconfig, token_for(kube, sys_ns, sa), tmp_path / "sa.kubeconfig")
    # The chart's own arguments, but for the ports (probes and metrics are not API calls).
    dep = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    args = [a for a in dep["spec"]["template"]["spec"]["containers"][0]["args"]
            if not a.startswith(("--liveness", "--metrics-port", "--job-image"))]
    assert "--leader-elect" in args and f"--namespace={ns}" in args
    op = Operator(kc, tmp_path / "operator.log",
                  [*args, "--job-image", "peon.invalid/peon-operator:test"])
    # A Game of its own: the operator judges the Games its servers use (games/status), and
    # only this one's servers use this one.
    game = yaml.safe_load((ROOT / "examples" / "games" / "valheim.yaml").read_text())
    game["metadata"] = {"name": ns}
    game["spec"].pop("aliases", None)
    kube.apply(game)
    try:
        spec = dict(gameUid=ns, settings=[{"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"}},
                              {"type": "env", "name": "s", "secretRef": {"name": "pw"}},
                              {"type": "txt", "name": "motd.txt", "content": "hi"}],
                    backup={"retention": {"keepLast": 1}}, storage={"retainOnDelete": False})
        # The Secret comes after its server (Secrets are watched; one the cache lacks is read).
        apply_as_user(kube, gameserver("life", ns, **spec))
        wait_for("SecretNotFound", lambda: condition(kube.get("GameServer", ns, "life"), "Valid")
                 .get("reason") == "SecretNotFound")
        kube.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "pw", "namespace": ns}, "stringData": {"ADMIN": "x"}})
        wait_phase(kube, ns, "life", "Running")
        # A first build the API server refuses (a claim over the namespace's storage quota) is
        # taken back whole: the Secret, Service and Deployment made before the claim go again.
        kube.create({"apiVersion": "v1", "kind": "ResourceQuota",
                     "metadata": {"name": "storage", "namespace": ns},
                     "spec": {"hard": {"requests.storage": "1Ti"}}})
        apply_as_user(kube, gameserver("huge", ns, gameUid=ns, settings=spec["settings"][:1],
                                       storage={"size": "2Ti"}))
        wait_for("the refusal", lambda: condition(kube.get("GameServer", ns, "huge"), "Valid")
                 .get("reason") == "Rejected")
        wait_for("the first build taken back", lambda: all(
            kube.get(k, ns, n) is None for k, n in (("Deployment", "huge"), ("Service", "huge"),
                                                     ("Secret", "huge-env"))))
        kube.delete("GameServer", ns, "huge")
        wait_for("the Game judged", lambda: (kube.get("Game", None, ns).get("status") or {}).get(
            "conditions"))
        for name in ("b1", "b2"):  # retention deletes b1
            kube.create(backup(name, ns, "life"))
            run_phase(kube, "GameServerBackup", ns, name, "Succeeded")
        wait_for("retention", lambda: kube.get("GameServerBackup", ns, "b1") is None)
        kube.create(restore("r", ns, "life", "b2"))
        run_phase(kube, "GameServerRestore", ns, "r", "Succeeded")
        wait_phase(kube, ns, "life", "Running")
        # A server with an off-site store is listed once the operator sees it (store_listing.py):
        # the listing is read from its Job's log (pods/log). A kwok pod has no log to give, so
        # the listing fails and says so; the read was asked for all the same.
        kube.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "store-keys", "namespace": ns},
                     "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                                    "RESTIC_PASSWORD": "c"}})
        apply_as_user(kube, gameserver("listed", ns, gameUid=ns, settings=spec["settings"][:1],
                                       backup={"store": {
                                           "s3": {"endpoint": "http://192.0.2.1:9000", "bucket": "peon-backups"},
                                           "secretRef": {"name": "store-keys"}}}))
        wait_for("the store's listing read", lambda: any(
            e.get("reason") == "StoreListFailed" for e in kube.list("Event", ns)), 90)
        kube.delete("GameServer", ns, "listed")
        # A lost node (spec.storage.recoverAfter, lost_node.py): the server's pod on a node no
        # kubelet runs (kwok leaves a node without its annotation alone) is never ready; the
        # operator reads the world's claim, its volume and the node (get persistentvolumeclaims,
        # persistentvolumes, nodes) and, the volume being one that can move (the bed's hostPath
        # provisioner: no node affinity), deletes the pod made before the node was lost (delete
        # pods). A node that never said it was ready is lost since it was made.
        lost = f"rbac-lost-{uuid.uuid4().hex[:6]}"
        apply_as_user(kube, gameserver("adrift", ns, gameUid=ns, settings=spec["settings"][:1],
                                       scheduling={"nodeSelector": {"kubernetes.io/hostname": lost}},
                                       storage={"recoverAfter": "1s", "retainOnDelete": False}))
        wait_for("the claim bound", lambda: (lambda c: c if (c or {}).get("spec", {}).get(
            "volumeName") else None)(kube.get("PersistentVolumeClaim", ns, "adrift-data")), 60)
        # Its pod is made before the node (timestamps are whole seconds): the pod the node held
        # before it was lost is the one deleted; one placed there since is left alone.
        wait_for("the pod made", lambda: kube.list("Pod", ns, "peon.dev/gameserver=adrift"), 60)
        time.sleep(2)
        kube.create({"apiVersion": "v1", "kind": "Node",
                     "metadata": {"name": lost, "labels": {"kubernetes.io/hostname": lost}}})
        room = {"cpu": "64", "memory": "512Gi", "pods": "110"}
        kube.raw("PATCH", f"/api/v1/nodes/{lost}/status",
                 {"status": {"capacity": room, "allocatable": room}},
                 content_type="application/merge-patch+json")
        try:
            def rescheduled():
                if any(e.get("reason") == "Rescheduled" for e in kube.list("Event", ns)):
                    return True
                gs = kube.get("GameServer", ns, "adrift") or {}
                return (f"NodeLost {condition(gs, 'NodeLost')}; pods " + str([
                    (p["metadata"]["creationTimestamp"], p["spec"].get("nodeName"),
                     p.get("status", {}).get("conditions"))
                    for p in kube.list("Pod", ns, "peon.dev/gameserver=adrift")]))
            wait_for("the pod on the lost node deleted", rescheduled, 90)
        finally:
            kube.delete("GameServer", ns, "adrift")
            kube.delete("Node", None, lost)
        # A Game's backupHooks run in the server's container (pods/exec). A kwok pod has no
        # kubelet to run them, so the backup fails, saying so; the hooks go again after it.
        hooked = {"before": [{"command": ["true"]}], "after": [{"command": ["true"]}]}
        kube.raw("PATCH", f"/apis/peon.dev/v1alpha1/games/{ns}", {"spec": {"backupHooks": hooked}},
                 content_type="application/merge-patch+json")
        g = kube.get("Game", None, ns)
        wait_for("the operator to see the hooks", lambda: (kube.get("Game", None, ns).get("status")
                 or {}).get("observedGeneration") == g["metadata"]["generation"])
        kube.create(backup("hooked", ns, "life"))
        failed = run_phase(kube, "GameServerBackup", ns, "hooked", "Failed")
        assert "backupHooks.before command 'true' failed" in failed["message"], failed
        kube.raw("PATCH", f"/apis/peon.dev/v1alpha1/games/{ns}", {"spec": {"backupHooks": None}},
                 content_type="application/merge-patch+json")
        # An update backs up first; fewer settings remove the Secret and ConfigMap.
        spec.update(image="ghcr.io/lloesche/valheim-server:v2",
                    settings=[{"type": "env", "name": "s", "secretRef": {"name": "pw"}}])
        kube.raw("PATCH", f"/api/v1/namespaces/{ns}/secrets/pw", {"stringData": {"SERVER_PASS": "y"}},
                 content_type="application/merge-patch+json")
        apply_as_user(kube, gameserver("life", ns, **spec))
        wait_for("the update", lambda: kube.get("Deployment", ns, "life")["spec"]["template"]["spec"]
                 ["containers"][0]["image"].endswith(":v2"), 90)
        wait_for("Secret and ConfigMap removed", lambda: kube.get("Secret", ns, "life-env") is None
                 and kube.get("ConfigMap", ns, "life-config") is None)
        kube.delete("GameServer", ns, "life")  # eradicate: final backup, then the world goes
        wait_for("the GameServer to go", lambda: kube.get("GameServer", ns, "life") is None, 90)
        assert "Forbidden" not in op.log() and not FORBIDDEN.search(op.log()), op.log()[-2000:]
        # What the account may do, as the API server lists it, less what every account may do
        # (an account with no bindings at all shows that).
        kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "nobody", "namespace": sys_ns}})
        nobody = token_kubeconfig(kubeconfig, token_for(kube, sys_ns, "nobody"), tmp_path / "nobody")
        allowed = allowed_rules(kc, [ns, sys_ns]) - allowed_rules(nobody, [ns, sys_ns])
    finally:
        op.stop()
        helm("uninstall", "rbac", "-n", sys_ns, check=False)
        kube.delete("Game", None, ns)
        kubectl("delete", "namespace", ns, sys_ns, "--wait=false")
    account = f"system:serviceaccount:{sys_ns}:{sa}"
    assert_exactly_used(used_rules(account), granted_rules(rendered), allowed)
    # RBAC cannot grant a label selector: the operator asks for one. It lists and watches its
    # own Secrets only; the users' that a server names are read by name (get).
    reads = secret_reads(account)

    def selector(uri: str) -> list[str]:  # as the API server reads it, however it is escaped
        return parse_qs(urlsplit(uri).query).get("labelSelector", [])
    assert reads and all(selector(uri) == ["app.kubernetes.io/managed-by=peon-operator"]
                         for uri in reads), reads


def gameserver_pod(kube, ns: str, name: str) -> str:
    return wait_for(f"{name}'s pod", lambda: [
        p["metadata"]["name"] for p in kube.list("Pod", ns, f"peon.dev/gameserver={name}")
        if not (p["metadata"].get("labels") or {}).get("peon.dev/download")
        and not p["metadata"].get("deletionTimestamp")])[0]


def test_the_peon_api_needs_exactly_its_rbac(kube, kubectl, kubeconfig, helm, crds, operator,
                                             tmp_path):
    """The PEON API, logged in as the chart's account for it, answers every route that writes
    or reads (a download included); it used exactly its Role's and ClusterRole's verbs."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("reads the test bed's audit log")
    sys_ns, ns = f"peon-{uuid.uuid4().hex[:6]}", f"t-apirbac-{uuid.uuid4().hex[:6]}"
    for n in (sys_ns, ns):
        kubectl("create", "namespace", n)
    key = "k" * 8 + uuid.uuid4().hex
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-key", "namespace": sys_ns},
                 "stringData": {"key": key}})
    values = ["--set", "watchNamespaces={" + ns + "}", "--set", "catalogue.install=false",
              "--set", "api.enabled=true", "--set", f"api.namespace={ns}",
              "--set", "api.keySecret=api-key"]
    rendered = helm("template", "apirbac", str(CHART), "-n", sys_ns, *values).stdout
    helm("install", "apirbac", str(CHART), "-n", sys_ns, *values)
    sa = "apirbac-peon-operator-api"
    kc = token_kubeconfig(kubeconfig, token_for(kube, sys_ns, sa), tmp_path / "api.kubeconfig")
    api = PeonApi(kc, ns, None, tmp_path / "api.log", key=key)
    try:
        assert api.call("GET", "/api/v1/plans")[0] == 200
        assert api.call("GET", "/api/v1/plan/valheim")[0] == 200
        assert api.call("GET", "/api/v1/servers") == (200, [])
        assert api.call("PUT", "/api/v1/server/create/valheim.life", {"PASSWORD": "hunter22"})[0] == 200
        # A server the cluster refuses (too long a description): its Secret goes again.
        refused = api.call("PUT", "/api/v1/server/create/valheim.nope",
                           {"PASSWORD": "hunter22", "description": "x" * 2000})
        assert refused[0] == 400 and kube.get("Secret", ns, "nope-api-env") is None, refused
        wait_phase(kube, ns, "life", "Running")
        assert api.call("GET", "/api/v1/server/get/valhiem.life")[0] == 200  # by PEON's alias
        assert api.call("PUT", "/api/v1/server/stop/valheim.life", {})[0] == 200
        assert api.call("PUT", "/api/v1/server/start/valheim.life", {})[0] == 200
        # What RBAC cannot say, the chart's admission policy does: the API's account execs
        # into, deletes and creates only download pods, never a server's.
        as_api = K(client_for(kc))
        for method, path, body, query in (
                ("POST", "pods/{pod}/exec", None, [("command", "sh"), ("stdout", "true")]),
                ("DELETE", "pods/{pod}", None, None),
                ("POST", "pods", {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "b1-download-abcdef", "labels": {"peon.dev/download": "b1"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}}, None)):  # a token
            for _ in range(5):  # the stop and start above replace the server's pod: ask its newest
                url = f"/api/v1/namespaces/{ns}/" + path.format(pod=gameserver_pod(kube, ns, "life"))
                refused = api_error(lambda: as_api.raw(method, url, body, query=query))
                if refused.status != 404:
                    break
                time.sleep(1)
            assert refused.status == 403 and "the PEON API" in refused.body, (url, refused.body)
        status, saved = api.call("PUT", "/api/v1/server/save/valheim.life")
        run_phase(kube, "GameServerBackup", ns, saved["info"], "Succeeded", timeout=90)
        # The download's pod starts, but a kwok node has no kubelet to exec in: it says so.
        status, res = api.call("GET", "/api/v1/server/save/valheim.life")
        assert status == 409 and "download" in res["info"], res
        # An admin's calls of the page and PEON's web UI: the log (the server's pod listed,
        # pods/log read: a kwok pod has no kubelet to give it, so the cluster's error, never a
        # 403) and a restore of that backup.
        status, res = api.call("GET", "/api/v1/server/logs/valheim.life?lines=5")
        assert status in (200, 400, 502) and "forbidden" not in json.dumps(res).lower(), res
        status, res = api.call("POST", "/page/restore/valheim.life", {"backup": saved["info"]})
        assert status == 200, res
        assert api.call("DELETE", "/api/v1/server/destroy/valheim.life", {})[0] == 200
        log = api.stop()
        assert "Traceback" not in log and not FORBIDDEN.search(log), log[-2000:]
        kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "nobody", "namespace": sys_ns}})
        nobody = token_kubeconfig(kubeconfig, token_for(kube, sys_ns, "nobody"), tmp_path / "nobody")
        allowed = allowed_rules(kc, [ns]) - allowed_rules(nobody, [ns])
    finally:
        if api.proc.poll() is None:
            api.stop()
        helm("uninstall", "apirbac", "-n", sys_ns, check=False)
        kubectl("delete", "namespace", ns, sys_ns, "--wait=false")
    assert_exactly_used(used_rules(f"system:serviceaccount:{sys_ns}:{sa}", agents=("peon-api",)),
                        granted_rules(rendered, api=True), allowed)
