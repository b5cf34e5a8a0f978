"""The controller's pure parts: change detection, claim updates, the work queue."""

from peon.operator.controller import claim_update, is_subset


def test_subset_ignores_server_defaults_and_omitted_empties():
    have = {"spec": {"replicas": 1, "revisionHistoryLimit": 10,
                     "template": {"spec": {"containers": [{"name": "c", "env": [{"name": "D"}],
                                                           "imagePullPolicy": "Always"}]}}}}
    want = {"spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "D", "value": ""}]}]}}}}
    assert is_subset(want, have)
    assert not is_subset({"spec": {"replicas": 0}}, {"spec": {"replicas": 1}})
    assert not is_subset({"spec": {"replicas": 1}}, {"spec": {}})
    assert is_subset({"cpu": 2}, {"cpu": "2"})
    assert not is_subset({"ports": [1, 2]}, {"ports": [1]})


def test_claim_update_sends_immutable_fields_back_and_only_grows():
    desired = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "w", "namespace": "n", "labels": {"a": "b"}},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}
    actual = {"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                       "resources": {"requests": {"storage": "10Gi"}}}}
    out = claim_update(desired, actual)
    assert out["spec"]["resources"]["requests"]["storage"] == "10Gi"  # never shrinks
    assert out["spec"]["storageClassName"] == "standard"
    desired["spec"]["resources"]["requests"]["storage"] = "20Gi"
    assert claim_update(desired, actual)["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_refusals_are_told_apart_from_what_passes_on_its_own():
    import json as _json
    from kubernetes.client.rest import ApiException
    from peon.shared.kube import refusal

    def err(status, message):
        e = ApiException(status=status, reason="x")
        e.body = _json.dumps({"message": message})
        return e
    child = {"kind": "PersistentVolumeClaim", "metadata": {"name": "w-data"}}
    assert "only dynamically provisioned" in refusal(err(403, 'persistentvolumeclaims "w-data" is '
        "forbidden: only dynamically provisioned pvc can be resized"), child)
    assert refusal(err(403, 'pvc "w" is forbidden: exceeded quota: q'), child)
    assert refusal(err(422, "Invalid value"), child).startswith(
        "the API server refused the PersistentVolumeClaim w-data: ")
    assert refusal(err(403, 'persistentvolumeclaims is forbidden: User "system:serviceaccount:'
                            'p:peon" cannot patch resource'), child) is None
    assert refusal(err(403, "unable to create new content in namespace x because it is being "
                            "terminated"), child) is None
    assert refusal(err(409, "conflict"), child) is None
    assert refusal(err(500, "etcd"), child) is None
