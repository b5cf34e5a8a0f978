"""Kube's requests (Kube._call): sent through the client's own pool, with its token and user
agent, without its serialisation layers; an error status raises ApiException as before."""
import json

import pytest
import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.rest import ApiException

from peon.shared.kube import Kube, refusal


class Pool:
    """Stands in for the client's urllib3 pool: records each request, answers as told."""

    def __init__(self, status=200, body=b"", reason="OK"):
        self.status, self.body, self.reason = status, body, reason
        self.sent = []

    def request(self, method, url, body=None, headers=None, timeout=None):
        self.sent.append({"method": method, "url": url, "body": body, "headers": headers})
        return urllib3.HTTPResponse(body=self.body, status=self.status, reason=self.reason,
                                    headers={"Content-Type": "application/json"})


def kube_with(pool, token_after_refresh="t2"):
    cfg = Configuration()
    cfg.host = "https://127.0.0.1:6443"
    cfg.api_key = {"BearerToken": "t1"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    # a service account's token file read again as it rotates (load_incluster_config's hook)
    cfg.refresh_api_key_hook = lambda c: c.api_key.update(BearerToken=token_after_refresh)
    k = Kube(ApiClient(cfg), agent="peon-operator")
    k.api.rest_client.pool_manager = pool
    return k


def test_an_apply_sends_the_object_as_json_with_the_token_and_the_managers_name():
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "odin-files", "namespace": "games"}, "data": {"motd.txt": "héllo"}}
    pool = Pool(body=json.dumps({**cm, "metadata": {**cm["metadata"], "resourceVersion": "7"}}).encode())
    got = kube_with(pool).apply(cm)
    assert got["metadata"]["resourceVersion"] == "7"  # the answer, parsed
    (sent,) = pool.sent
    assert sent["method"] == "PATCH"
    assert sent["url"] == ("https://127.0.0.1:6443/api/v1/namespaces/games/configmaps/odin-files"
                           "?fieldManager=peon-operator&force=true")
    assert json.loads(sent["body"]) == cm
    h = sent["headers"]
    assert h["authorization"] == "Bearer t2"  # through the refresh hook, as the client does
    assert h["Content-Type"] == "application/apply-patch+yaml"
    assert h["Accept"] == "application/json"
    assert h["User-Agent"].startswith("peon-operator/")


def test_a_query_is_encoded_and_a_get_sends_no_body():
    pool = Pool(body=b'{"items": [], "metadata": {"resourceVersion": "3"}}')
    assert kube_with(pool).list("Pod", "games", "peon.dev/gameserver=odin,app in (a b)") == []
    (sent,) = pool.sent
    assert sent["method"] == "GET" and sent["body"] is None and "Content-Type" not in sent["headers"]
    assert sent["url"] == ("https://127.0.0.1:6443/api/v1/namespaces/games/pods?labelSelector="
                           "peon.dev/gameserver%3Dodin%2Capp%20in%20%28a%20b%29&limit=500")


def test_an_error_status_raises_with_the_api_servers_status_and_message():
    status = {"kind": "Status", "code": 422, "message": 'Service "odin" is invalid: nodePort taken'}
    pool = Pool(status=422, reason="Unprocessable Entity", body=json.dumps(status).encode())
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "odin", "namespace": "games"}}
    with pytest.raises(ApiException) as e:
        kube_with(pool).apply(svc)
    assert e.value.status == 422 and e.value.reason == "Unprocessable Entity"
    assert "nodePort taken" in refusal(e.value, svc)  # read as the reconcile reads a refusal


def test_a_not_found_is_none_for_a_get_and_false_for_a_delete():
    pool = Pool(status=404, reason="Not Found", body=b'{"kind": "Status", "code": 404}')
    k = kube_with(pool)
    assert k.get("Secret", "games", "odin-env") is None
    assert k.delete("Secret", "games", "odin-env") is False
    assert json.loads(pool.sent[1]["body"]) == {"propagationPolicy": "Background"}


def test_an_empty_answer_is_none():
    assert kube_with(Pool(body=b""))._call("DELETE", "/api/v1/namespaces/games/secrets/x") is None
