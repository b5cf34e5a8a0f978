"""manifests/ is the chart rendered (kept fresh), and `kubectl apply -k manifests/` installs it."""
import pathlib

from kube_helpers import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_manifests_are_the_chart_rendered(helm):
    fresh = helm("template", "peon", str(ROOT / "charts" / "peon-operator"),
                 "--namespace", "peon-system", "--include-crds").stdout
    committed = (ROOT / "manifests" / "peon-operator.yaml").read_text()
    assert committed.split("\n", 1)[1] == fresh, "manifests/ is stale: run `make manifests`"


def test_apply_k_installs_a_working_operator_deployment(kube, kubectl, crds):
    res = kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"), check=False)
    assert res.returncode == 0, res.stderr
    try:
        dep = wait_for("the operator Deployment available", lambda: (lambda d: d if d and (
            d.get("status") or {}).get("availableReplicas") == 1 else None)(
            kube.get("Deployment", "peon-system", "peon-peon-operator")))
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "peon-peon-operator"
        assert len(kube.list("Game")) >= 12
        assert kube.get("ValidatingAdmissionPolicyBinding", None, "peon-peon-operator-gameservers")
    finally:
        # The CRDs stay: deleting them would delete every GameServer in the cluster.
        for kind, ns, name in (("Deployment", "peon-system", "peon-peon-operator"),
                               ("ClusterRoleBinding", None, "peon-peon-operator"),
                               ("ClusterRoleBinding", None, "peon-peon-operator-catalogue"),
                               ("ClusterRole", None, "peon-peon-operator"),
                               ("ClusterRole", None, "peon-peon-operator-catalogue"),
                               # Cluster-wide: left, it would judge every later test's servers.
                               ("ValidatingAdmissionPolicyBinding", None,
                                "peon-peon-operator-gameservers"),
                               ("ValidatingAdmissionPolicy", None,
                                "peon-peon-operator-gameservers")):
            kube.delete(kind, ns, name)
        kube.delete("Namespace", None, "peon-system")
