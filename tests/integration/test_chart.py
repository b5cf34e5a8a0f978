"""The Helm chart: lint, validated by the real API server, installed, upgraded, uninstalled;
its CRDs and catalogue are the project's own, byte for byte."""
import pathlib
import uuid

import yaml


ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "peon-operator"


def test_chart_copies_are_the_projects_own():
    for sub, src in (("crds", ROOT / "crds"), ("games", ROOT / "examples" / "games")):
        mine = {p.name: p.read_bytes() for p in (CHART / sub).glob("*.yaml")}
        theirs = {p.name: p.read_bytes() for p in src.glob("*.yaml")}
        assert mine == theirs, f"charts/peon-operator/{sub} differs from {src.relative_to(ROOT)}"


def test_lint_and_server_side_dry_run(helm, kubectl, crds):
    out = helm("lint", str(CHART))
    assert "0 chart(s) failed" in out.stdout
    for values in ([], ["--set", "watchNamespaces={default,kube-public}", "--set", "catalogue.install=false"]):
        rendered = helm("template", "dry", str(CHART), "-n", "default", *values).stdout
        res = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
        assert res.returncode == 0, res.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
        assert {"ServiceAccount", "ClusterRole", "Deployment", "Service"} <= kinds


def test_install_upgrade_uninstall(helm, kube, kubectl, crds):
    ns = f"peon-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    try:
        # The suite applied the catalogue already (kubectl owns those Games, and Helm will not
        # adopt them); the dry-run test above renders and validates it.
        helm("install", "peon", str(CHART), "-n", ns, "--set", "watchNamespaces={" + ns + "}",
             "--set", "catalogue.install=false", "--wait", "--timeout", "120s")
        dep = kube.get("Deployment", ns, "peon-peon-operator")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert f"--namespace={ns}" in c["args"] and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert kube.get("RoleBinding", ns, "peon-peon-operator")
        assert "--leader-elect" not in c["args"] and dep["spec"]["strategy"]["type"] == "Recreate"
        assert kube.get("PodDisruptionBudget", ns, "peon-peon-operator") is None
        # High availability: two replicas (one leads; see test_replicas.py) and a disruption budget.
        helm("upgrade", "peon", str(CHART), "-n", ns, "--set", "workers=4", "--set", "replicas=2",
             "--reuse-values", "--wait")
        dep = kube.get("Deployment", ns, "peon-peon-operator")
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--workers=4" in args and "--leader-elect" in args
        assert "--leader-election-id=peon-peon-operator" in args  # one Lease per release
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        assert dep["status"].get("availableReplicas") == 2
        assert kube.get("PodDisruptionBudget", ns, "peon-peon-operator")["spec"]["minAvailable"] == 1
        notes = helm("status", "peon", "-n", ns).stdout
        assert "kubectl get games" in notes
    finally:
        helm("uninstall", "peon", "-n", ns, "--wait", check=False)
        assert kube.get("Deployment", ns, "peon-peon-operator") is None
        assert kube.get("ClusterRole", None, "peon-peon-operator") is None
        assert kube.get("CustomResourceDefinition", None, "gameservers.peon.dev")  # CRDs stay
        kubectl("delete", "namespace", ns, "--wait=false")


def test_values_are_checked_against_the_schema(helm):
    for args, words in ((["--set", "replicas=abc"], "/replicas"),
                        (["--set", "replica=2"], "'replica' not allowed"),
                        (["--set", "logFormat=xml"], "/logFormat"),
                        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy")):
        out = helm("template", "x", str(CHART), *args, check=False)
        assert out.returncode != 0 and words in out.stderr, (args, out.stderr)


def test_pull_secrets_pod_labels_annotations_and_log_format_reach_the_pod(helm):
    import yaml
    docs = yaml.safe_load_all(helm("template", "x", str(CHART), "--set", "logFormat=json",
                                   "--set", "podLabels.team=blue",
                                   "--set", "podAnnotations.owner=friends",
                                   "--set", "imagePullSecrets[0].name=regcred").stdout)
    dep = next(d for d in docs if d and d["kind"] == "Deployment")
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["labels"]["team"] == "blue"
    assert tmpl["metadata"]["annotations"] == {"owner": "friends"}
    assert tmpl["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert "--log-format=json" in tmpl["spec"]["containers"][0]["args"]
    # The selector stays the release's own: extra labels never change it.
    assert "team" not in dep["spec"]["selector"]["matchLabels"]


def test_a_catalogue_applied_with_kubectl_is_adopted_and_outlives_the_release(helm, kube,
                                                                               kubectl, crds):
    """`make run` applies the catalogue with kubectl; Helm refuses to install over objects it
    does not own unless told to take them (--take-ownership), and uninstalling the release must
    not delete the Games that servers use (they are kept, as the CRDs are)."""
    ns = f"peon-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    values = ["--set", "watchNamespaces={" + ns + "}"]
    try:
        plain = helm("install", "adopt", str(CHART), "-n", ns, *values, check=False)
        assert plain.returncode != 0 and "exists and cannot be imported" in plain.stderr
        helm("install", "adopt", str(CHART), "-n", ns, *values, "--take-ownership")
        g = kube.get("Game", None, "valheim")
        assert g["metadata"]["annotations"]["meta.helm.sh/release-name"] == "adopt"
        assert g["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        helm("uninstall", "adopt", "-n", ns, "--wait")
        assert {p.stem for p in (CHART / "games").glob("*.yaml")} <= {
            x["metadata"]["name"] for x in kube.list("Game")}
    finally:
        helm("uninstall", "adopt", "-n", ns, check=False)
        # Hand the catalogue back to kubectl, as the rest of the suite found it.
        kubectl("annotate", "games", "--all", "meta.helm.sh/release-name-",
                "meta.helm.sh/release-namespace-", "helm.sh/resource-policy-", check=False)
        kubectl("label", "games", "--all", "app.kubernetes.io/managed-by-", check=False)
        kubectl("delete", "namespace", ns, "--wait=false")
