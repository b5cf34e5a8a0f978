"""The control plane is real: controllers, scheduler, kwok nodes, admission, RBAC, SSA; and with
two real nodes, one pod network across them and a node that loses its power."""

import ipaddress
import pathlib
import socket
import subprocess
import time

import pytest

from kube_helpers import api_error, client_for, message, wait_for, K
from realnode_helpers import NETCHECK_IMAGE, TAINT, two_real_nodes_joined

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_nodes_are_ready(kube):
    nodes = kube.list("Node")
    assert nodes
    for n in nodes:
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])


def test_deployment_pod_runs_on_a_kwok_node(kube, namespace):
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})

    def running_pod():
        pods = kube.list("Pod", namespace, "app=web")
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)
    pod = wait_for("a Running pod", running_pod)
    assert pod["spec"]["nodeName"].startswith("kwok-node-")
    assert wait_for("deployment available",
                    lambda: kube.get("Deployment", namespace, "web")["status"].get("readyReplicas") == 1)


def test_deleting_an_owner_garbage_collects_its_children(kube, namespace):
    owner = kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "owner", "namespace": namespace}})
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "child", "namespace": namespace, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                    "uid": owner["metadata"]["uid"]}]}})
    kube.delete("ConfigMap", namespace, "owner")
    wait_for("the child to be collected", lambda: kube.get("ConfigMap", namespace, "child") is None)


def test_job_pod_succeeds_and_job_completes(kube, namespace):
    kube.apply({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "once", "namespace": namespace},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})

    def complete():
        conds = kube.status_of("Job", namespace, "once").get("conditions") or []
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)
    wait_for("the Job to complete", complete)
    pods = kube.list("Pod", namespace, "job-name=once")
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]


def test_job_pod_labelled_to_fail_fails_the_job(kube, namespace):
    kube.apply({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "doomed", "namespace": namespace},
                "spec": {"backoffLimit": 0, "template": {
                    "metadata": {"labels": {"testbed.peon.dev/outcome": "fail"}},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "c", "image": "busybox"}]}}}})

    def failed():
        conds = kube.status_of("Job", namespace, "doomed").get("conditions") or []
        return any(c["type"] == "Failed" and c["status"] == "True" for c in conds)
    wait_for("the Job to fail", failed)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.testbed.peon.dev"},
    "spec": {"group": "testbed.peon.dev", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {
                     "type": "object", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                     "x-kubernetes-validations": [{"rule": "self.min <= self.max",
                                                   "message": "min must not exceed max"}]}}}}}]}}


def test_crd_cel_rule_rejects_bad_object_with_its_message(kube, namespace):
    kube.apply(CRD)
    wait_for("the CRD to be established", lambda: any(
        c["type"] == "Established" and c["status"] == "True"
        for c in kube.status_of("CustomResourceDefinition", None, "widgets.testbed.peon.dev")
        .get("conditions") or []))
    url = f"/apis/testbed.peon.dev/v1/namespaces/{namespace}/widgets"
    good = {"apiVersion": "testbed.peon.dev/v1", "kind": "Widget",
            "metadata": {"name": "good"}, "spec": {"min": 1, "max": 2}}
    wait_for("the new kind to be served", lambda: kube.raw("POST", url, good))
    bad = dict(good, metadata={"name": "bad"}, spec={"min": 3, "max": 2})
    e = api_error(lambda: kube.raw("POST", url, bad))
    assert e.status == 422 and "min must not exceed max" in message(e)


def test_service_account_needs_a_role_to_list_secrets(kube, namespace, kubeconfig):
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "reader", "namespace": namespace}})
    token = kube.raw("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/reader/token",
                     {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"expirationSeconds": 600}})["status"]["token"]
    api = client_for(kubeconfig)
    cfg = api.configuration
    cfg.cert_file = cfg.key_file = None
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    as_sa = K(type(api)(cfg))
    e = api_error(lambda: as_sa.list("Secret", namespace))
    assert e.status == 403 and "cannot list resource \"secrets\"" in message(e)
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "secret-reader", "namespace": namespace},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "reader", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "secret-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    # RBAC caches refresh asynchronously; once bound, the same call must succeed.
    listed = wait_for("the binding to take effect",
                      lambda: isinstance(as_sa.list("Secret", namespace), list))
    assert listed is True


def test_server_side_apply_twice_changes_nothing(kube, namespace):
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "same", "namespace": namespace}, "data": {"a": "1"}}
    first = kube.apply(cm)
    second = kube.apply(cm)
    assert first["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    third = kube.apply(dict(cm, data={"a": "2"}))
    assert third["metadata"]["resourceVersion"] != second["metadata"]["resourceVersion"]


# --- two real nodes: one pod network, one kube-proxy, and a power cut ------------------------------

NODES = ("real-node-0", "real-node-1")


@pytest.fixture(scope="module")
def two_real_nodes(kubeconfig, kubectl):
    """real-node-0 and real-node-1 (`tools/cluster up --real-nodes 2`); the second goes again
    after this module when the module made it."""
    with two_real_nodes_joined(kubectl) as nodes:
        yield nodes


def ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in node.get("status", {}).get("conditions") or [])


def netcheck(kube, ns: str, name: str, node: str) -> dict:
    """A pod on `node` (nodeName: no scheduler) answering TCP 7000 with its name; once ready."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
           "spec": {"nodeName": node, "tolerations": [{"key": TAINT, "operator": "Exists"}],
                    "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "netcheck", "image": NETCHECK_IMAGE,
                                    "imagePullPolicy": "Never", "args": ["serve", "7000"]}]}}
    # A fresh namespace's default ServiceAccount may not be there yet.
    wait_for(f"pod {name} created", lambda: kube.create(pod), 30)
    return ready_pod(kube, ns, name)


def ready_pod(kube, ns: str, name: str, timeout: float = 60) -> dict:
    def get():
        p = kube.get("Pod", ns, name) or {}
        st = p.get("status", {})
        if st.get("podIP") and any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in st.get("conditions") or []):
            return p
        return f"{st.get('phase')}: {st.get('containerStatuses')}"
    return wait_for(f"pod {name} ready", get, timeout, interval=0.5)


def ask(kubectl, ns: str, pod: str, ip: str, text: str) -> subprocess.CompletedProcess:
    """From inside `pod`, over the pod network: one line to ip:7000, its answer."""
    return kubectl("-n", ns, "exec", pod, "--", "/netcheck", "ask", ip, "7000", text, check=False)


def test_two_real_nodes_each_with_its_address_and_subnet_reach_each_others_pods(
        kube, kubectl, namespace, two_real_nodes):
    nodes = {n: kube.get("Node", None, n) for n in NODES}
    for name, n in nodes.items():
        assert ready(n), name
        assert {"key": TAINT, "value": "true", "effect": "NoSchedule"} in n["spec"]["taints"]
        assert n["metadata"]["labels"]["testbed.peon.dev/node"] == "real"
    # The API server reaches each kubelet at its own address on the bed's bridge.
    assert {name: [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
            for name, n in nodes.items()} == {"real-node-0": ["10.89.0.1"],
                                              "real-node-1": ["10.89.1.1"]}

    a = netcheck(kube, namespace, "a", "real-node-0")
    b = netcheck(kube, namespace, "b", "real-node-1")
    ip_a, ip_b = a["status"]["podIP"], b["status"]["podIP"]
    assert ipaddress.ip_address(ip_a) in ipaddress.ip_network("10.89.0.0/24")
    assert ipaddress.ip_address(ip_b) in ipaddress.ip_network("10.89.1.0/24")

    # Both ways across the nodes, by exec through each node's kubelet.
    there = ask(kubectl, namespace, "a", ip_b, "from-a")
    assert (there.returncode, there.stdout.strip()) == (0, "b from-a"), there.stderr
    back = ask(kubectl, namespace, "b", ip_a, "from-b")
    assert (back.returncode, back.stdout.strip()) == (0, "a from-b"), back.stderr
    # Each pod's log is its own node's (each kubelet keeps its pods' logs apart), and says who
    # came: the other node's pod, by its pod address (nothing masqueraded in between).
    assert f"answered {ip_a}" in kubectl("-n", namespace, "logs", "b").stdout
    assert f"answered {ip_b}" in kubectl("-n", namespace, "logs", "a").stdout


def test_one_kube_proxy_serves_every_real_nodes_services(kube, kubectl, namespace, two_real_nodes):
    proxies = []
    for p in pathlib.Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if p.name.isdigit() and cmd[0].endswith(b"/kube-proxy"):
            proxies.append(p.name)
    assert len(proxies) == 1, proxies
    netcheck(kube, namespace, "b", "real-node-1")
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": namespace},
                 "spec": {"selector": {"app": "b"}, "ports": [{"port": 7000, "protocol": "TCP"}]}})
    ip = kube.get("Service", namespace, "b")["spec"]["clusterIP"]

    def through_the_service():
        # Until kube-proxy has the endpoint, the bed's guard rejects the Service's address.
        try:
            with socket.create_connection((ip, 7000), timeout=2) as s:
                s.settimeout(3)
                s.sendall(b"from-host\n")
                return {"answer": s.recv(256).decode()}
        except OSError as e:
            return f"{e}"
    got = wait_for("an answer through the Service", through_the_service, 60, interval=0.5)
    assert got["answer"].strip() == "b from-host"


def test_a_node_cut_off_from_power_goes_not_ready_and_its_pods_come_back_with_it(
        kube, kubectl, namespace, two_real_nodes):
    _, second = two_real_nodes
    netcheck(kube, namespace, "a", "real-node-0")
    b = netcheck(kube, namespace, "b", "real-node-1")
    before = ask(kubectl, namespace, "a", b["status"]["podIP"], "before")
    assert before.stdout.strip() == "b before", before.stderr

    def lease():
        # The node's own heartbeat lease (a lease left by an earlier node of the same name is
        # collected with it, and the kubelet makes a new one).
        uid = kube.get("Node", None, "real-node-1")["metadata"]["uid"]
        got = kube.get("Lease", "kube-node-lease", "real-node-1") or {}
        owners = [o["uid"] for o in got.get("metadata", {}).get("ownerReferences") or []]
        return got if owners == [uid] else f"owners {owners}"
    wait_for("real-node-1's lease", lease, 60, interval=0.5)

    t0 = time.monotonic()
    second.power_cut()
    try:
        t_cut = time.monotonic() - t0
        lease_at_cut = lease()["spec"]["renewTime"]
        # The pod's process went with the node: nothing answers at its address.
        gone = ask(kubectl, namespace, "a", b["status"]["podIP"], "during")
        assert gone.returncode == 1 and "netcheck ask: " in gone.stderr, (gone.stdout, gone.stderr)

        def not_ready():
            n = kube.get("Node", None, "real-node-1")
            c = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
            return c if c["status"] != "True" else f"Ready {c['status']}"
        cond = wait_for("real-node-1 to go NotReady", not_ready, 120, interval=1)
        t_not_ready = time.monotonic() - t0
        # The controller-manager noticed the silence: no heartbeat came since the cut.
        assert (cond["status"], cond["reason"]) == ("Unknown", "NodeStatusUnknown")
        assert lease()["spec"]["renewTime"] == lease_at_cut
        assert ready(kube.get("Node", None, "real-node-0"))  # the other node lives on
    finally:
        if second.cut():
            t_on = second.power_on(lambda *a, **kw: kubectl(*a, **kw).stdout)
    assert ready(kube.get("Node", None, "real-node-1"))

    # Its pod comes back as on a rebooted node (a new sandbox, the container started again).
    def answers():
        p = kube.get("Pod", namespace, "b")
        ip = p.get("status", {}).get("podIP")
        if not ip:
            return "no pod address yet"
        got = ask(kubectl, namespace, "a", ip, "after")
        return {"answer": got.stdout} if got.returncode == 0 else got.stderr
    assert wait_for("b to answer again", answers, 120, interval=1)["answer"].strip() == "b after"
    restarts = kube.get("Pod", namespace, "b")["status"]["containerStatuses"][0]["restartCount"]
    assert restarts >= 1
    print(f"\npower cut in {t_cut:.1f}s; NotReady {t_not_ready:.1f}s after the cut; "
          f"Ready again {t_on:.1f}s after power on")
