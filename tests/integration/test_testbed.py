"""The control plane is real: controllers, scheduler, kwok nodes, admission, RBAC, SSA."""

from kube_helpers import api_error, client_for, message, wait_for, K


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
