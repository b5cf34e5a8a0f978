"""The chart's README documents every value users can set."""
import pathlib

import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "peon-operator"


def leaves(values: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in values.items():
        key = f"{prefix}{k}"
        # Maps whose keys are Kubernetes fields (resources, security contexts) are one value.
        if isinstance(v, dict) and v and k not in ("resources", "podSecurityContext", "securityContext"):
            out += leaves(v, key + ".")
        else:
            out.append(key)
    return out


def test_every_value_is_documented():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [k for k in leaves(values) if f"`{k}`" not in readme]
    assert not missing, f"charts/peon-operator/README.md does not document {missing}"
