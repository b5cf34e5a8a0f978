"""The Flux examples (examples/flux/) against Flux's own CRDs (release 2.9.5, generated from its
API modules by tools/testbed/flux-crds), validated by the real API server's server-side dry run."""
import copy
import pathlib
import subprocess

import pytest
import yaml

from kube_helpers import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "flux").glob("*.yaml"))


@pytest.fixture(scope="module")
def flux_crds(kube, kubectl):
    """Flux's CRDs, unless the cluster has Flux already (then its own are used)."""
    gen = subprocess.run([str(ROOT / "tools/testbed/flux-crds")], capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    out = gen.stdout.strip()

    def ok(*args):
        res = kubectl(*args, check=False)
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"

    for crd in sorted(pathlib.Path(out).glob("*.yaml")):
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        if kube.get("CustomResourceDefinition", None, name) is None:
            ok("apply", "--server-side", "-f", str(crd))
        # Just created, a CRD may have no status yet, and kubectl wait then fails at once
        # (".status.conditions accessor error: <nil>"): asked again until it answers.
        wait_for(f"crd/{name} established", lambda: kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}",
            check=False).returncode == 0, 90, interval=1)
    if kube.get("Namespace", None, "flux-system") is None:
        ok("create", "namespace", "flux-system")
    return out


def dry_run(kubectl, docs) -> subprocess.CompletedProcess:
    return kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                   input=yaml.safe_dump_all(docs))


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_examples_pass_a_server_side_dry_run(flux_crds, kubectl):
    assert {p.name for p in EXAMPLES} == {"peon-source.yaml", "peon-helmrelease.yaml",
                                          "peon-kustomization.yaml"}
    for path in EXAMPLES:
        res = kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
        assert res.returncode == 0, f"{path.name}: {res.stderr}"
        assert "(server dry run)" in res.stdout


def test_the_dry_run_is_checked_against_flux_schemas(flux_crds, kubectl):
    """The dry run above means something: the same objects with a field Flux does not know,
    or a bad value, are refused with Flux's own schema messages."""
    release = load(ROOT / "examples/flux/peon-helmrelease.yaml")[0]
    bad = copy.deepcopy(release)
    bad["spec"]["install"]["crds"] = "Sometimes"
    res = dry_run(kubectl, [bad])
    assert res.returncode != 0 and "spec.install.crds" in res.stderr, res.stderr
    bad = copy.deepcopy(release)
    bad["spec"]["chart"]["spec"]["sourceRef"]["kind"] = "Bucketz"
    res = dry_run(kubectl, [bad])
    assert res.returncode != 0 and "sourceRef.kind" in res.stderr, res.stderr
    kustomization = load(ROOT / "examples/flux/peon-kustomization.yaml")[0]
    del kustomization["spec"]["prune"]
    res = dry_run(kubectl, [kustomization])
    assert res.returncode != 0 and "spec.prune" in res.stderr, res.stderr


def test_what_the_examples_point_at_exists_and_installs(flux_crds, kubectl, helm, crds):
    """The paths the examples name are in this repository, and the HelmRelease's values make
    a chart the API server accepts."""
    release = load(ROOT / "examples/flux/peon-helmrelease.yaml")[0]
    chart = ROOT / release["spec"]["chart"]["spec"]["chart"]
    assert (chart / "Chart.yaml").is_file()
    operator_ks = load(ROOT / "examples/flux/peon-kustomization.yaml")[0]
    assert (ROOT / operator_ks["spec"]["path"] / "kustomization.yaml").is_file()
    values = yaml.safe_dump(release["spec"]["values"])
    rendered = helm("template", release["spec"]["releaseName"], str(chart), "--include-crds",
                    "-n", release["spec"]["targetNamespace"], "-f", "-", input=values).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "Game"} <= {d["kind"] for d in docs}
    # The target namespace is created by Flux (install.createNamespace); the dry run needs it.
    kubectl("create", "namespace", release["spec"]["targetNamespace"], check=False)
    res = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert res.returncode == 0, res.stderr
