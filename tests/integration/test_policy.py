"""The install's policy for GameServer authors (charts/peon-operator/templates/policy.yaml, a
ValidatingAdmissionPolicy): applied as the chart renders it, and tried by an author who is not
an admin. Each refusal comes at `kubectl apply`, names the field and the chart value."""
import pathlib
import uuid

import pytest
import yaml
from kubernetes.client.rest import ApiException

from gs_helpers import gameserver, token_kubeconfig
from kube_helpers import K, client_for, wait_for
from test_rbac import token_for

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "peon-operator"


@pytest.fixture
def policed(kube, kubectl, kubeconfig, helm, crds, tmp_path):
    """A namespace under the policy, an author who may write GameServers there, read the
    Secret `mine` and change the claim `my-claim` (and nothing else), and a server made
    before the policy that it would refuse now."""
    ns, release = f"pol-{uuid.uuid4().hex[:6]}", f"p{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    legacy = gameserver("legacy", ns, network={"type": "ClusterIP", "hostPorts": True})
    kube.create(legacy)
    for name in ("mine", "theirs"):
        kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                     "stringData": {"SERVER_PASS": "x"}})
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "author", "namespace": ns}})
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "author", "namespace": ns},
                 "rules": [{"apiGroups": ["peon.dev"], "resources": ["gameservers"],
                            "verbs": ["get", "create", "update", "patch"]},
                           {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mine"],
                            "verbs": ["get"]},
                           {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                            "resourceNames": ["my-claim"], "verbs": ["get", "update"]}]})
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "author", "namespace": ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "author"},
                 "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": ns}]})
    values = ["--set", "watchNamespaces={" + ns + "}",
              "--set", "policy.images={registry.example/games/}",
              "--set", "policy.serviceTypes={ClusterIP,NodePort}",
              "--set", "policy.tolerations={dedicated}",
              "--set", "policy.storeEndpoints={https://s3.example/}"]
    rendered = helm("template", release, str(CHART), "--show-only", "templates/policy.yaml",
                    *values).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert [d["kind"] for d in docs] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    kubectl("apply", "-f", "-", input=rendered)
    author = K(client_for(token_kubeconfig(kubeconfig, token_for(kube, ns, "author"),
                                           tmp_path / "author.kubeconfig")))
    ok = dict(network={"type": "ClusterIP"})
    # The binding takes a moment to reach the API server's admission: a refusal says it has.
    wait_for("the policy in force", lambda: refusal(author, gameserver(
        f"probe-{uuid.uuid4().hex[:6]}", ns, image="elsewhere/x:1", **ok)) is not None, 30)
    yield author, ns, ok
    kubectl("delete", "-f", "-", input=rendered, check=False)
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def refusal(k: K, obj: dict) -> str | None:
    """The API server's message when it refuses `obj`; None when it takes it."""
    try:
        k.create(obj)
    except ApiException as e:
        assert e.status in (403, 422), e.body
        return yaml.safe_load(e.body)["message"]
    return None


@pytest.mark.parametrize("spec, words", [
    (dict(image="docker.io/evil/miner:1"),
     "spec.image: docker.io/evil/miner:1 is not allowed by this install (images must start with "
     "registry.example/games/; the chart value policy.images)"),
    (dict(network={}), "spec.network.type: LoadBalancer is not allowed by this install (allowed: "
     "ClusterIP, NodePort; the chart value policy.serviceTypes)"),
    (dict(network={"type": "ClusterIP", "hostPorts": True}), "spec.network.hostPorts is not allowed"),
    (dict(scheduling={"tolerations": [{"operator": "Exists"}]},
          network={"type": "ClusterIP"}), "a toleration without a key tolerates every taint"),
    (dict(scheduling={"tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                       "operator": "Exists"}]}, network={"type": "ClusterIP"}),
     "only taints with the keys dedicated may be tolerated"),
    (dict(scheduling={"priorityClassName": "system-node-critical"}, network={"type": "ClusterIP"}),
     "spec.scheduling.priorityClassName: system-node-critical is not allowed by this install (none is"),
    (dict(backup={"store": {"s3": {"endpoint": "http://169.254.169.254", "bucket": "worlds"},
                            "secretRef": {"name": "mine"}}}, network={"type": "ClusterIP"}),
     "spec.backup.store.s3.endpoint: http://169.254.169.254 is not allowed"),
    (dict(settings=[{"type": "env", "name": "e", "secretRef": {"name": "theirs"}}],
          network={"type": "ClusterIP"}),
     "spec.settings: you may not read every Secret this GameServer names (theirs)"),
    (dict(notify={"secretRef": {"name": "theirs"}}, network={"type": "ClusterIP"}),
     "spec.notify.secretRef: you may not read the Secret theirs"),
    (dict(backup={"store": {"s3": {"endpoint": "https://s3.example/eu", "bucket": "worlds"},
                            "secretRef": {"name": "theirs"}}}, network={"type": "ClusterIP"}),
     "spec.backup.store.secretRef: you may not read the Secret theirs"),
    (dict(storage={"existingClaim": "someone-elses-world"}, network={"type": "ClusterIP"}),
     "spec.storage.existingClaim: you may not change the claim someone-elses-world yourself"),
])
def test_an_author_is_refused_what_the_install_does_not_allow(policed, spec, words):
    author, ns, _ = policed
    message = refusal(author, gameserver("asks", ns, **spec))
    assert message and words in message, message
    assert author.get("GameServer", ns, "asks") is None


def test_an_author_gets_what_the_install_allows(policed):
    author, ns, ok = policed
    spec = dict(image="registry.example/games/valheim:2",
                settings=[{"type": "env", "name": "e", "secretRef": {"name": "mine"}}],
                scheduling={"tolerations": [{"key": "dedicated", "operator": "Equal",
                                             "value": "games", "effect": "NoSchedule"}]},
                storage={"existingClaim": "my-claim"},
                backup={"store": {"s3": {"endpoint": "https://s3.example/eu", "bucket": "worlds"},
                                  "secretRef": {"name": "mine"}}}, network={"type": "NodePort"})
    assert refusal(author, gameserver("allowed", ns, **spec)) is None


def test_a_server_made_before_the_policy_still_starts_and_stops_but_its_spec_is_judged(policed):
    author, ns, _ = policed
    path = f"/apis/peon.dev/v1alpha1/namespaces/{ns}/gameservers/legacy"
    # Annotations (kubectl peon start/stop, the PEON API): the spec is unchanged, no judgement.
    author.raw("PATCH", path, {"metadata": {"annotations": {"peon.dev/wake": "2026-12-06T20:00:00Z"}}},
               content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as e:
        author.raw("PATCH", path, {"spec": {"description": "a new description"}},
                   content_type="application/merge-patch+json")
    assert "spec.network.hostPorts is not allowed" in e.value.body
