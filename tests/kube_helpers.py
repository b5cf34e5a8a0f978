"""Test helpers that talk to a real cluster through the official client. No mocks."""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from peon.shared.kube import KINDS, Kube

# Kinds only the tests read.
KINDS.update({
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "ResourceQuota": ("/api/v1", "resourcequotas", True),
    "ValidatingAdmissionPolicy": ("/apis/admissionregistration.k8s.io/v1",
                                  "validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("/apis/admissionregistration.k8s.io/v1",
                                         "validatingadmissionpolicybindings", False),
})


def client_for(kubeconfig: str) -> ApiClient:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return ApiClient(cfg)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.25):
    """Poll until fn() returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except ApiException as e:
            last = f"ApiException {e.status}: {e.reason}"
        if last and not isinstance(last, str):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class K(Kube):
    """Kube plus a few verbs only tests need. Writes as `kubectl`, as a user would: a test must
    never pass for the operator by writing under the operator's own field manager."""

    field_manager = "kubectl"

    def raw(self, method: str, url: str, body=None, content_type="application/json", query=None):
        return self._call(method, url, body=body, content_type=content_type, query=query)

    def status_of(self, kind: str, ns: str, name: str) -> dict:
        obj = self.get(kind, ns, name)
        return (obj or {}).get("status") or {}


def api_error(fn: Callable[[], Any]) -> ApiException:
    try:
        fn()
    except ApiException as e:
        return e
    raise AssertionError("expected the API to refuse")


def message(e: ApiException) -> str:
    try:
        return json.loads(e.body).get("message", "")
    except Exception:
        return str(e.body)
