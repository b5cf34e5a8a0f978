"""The CRDs parse into the schemas we meant: every schema node uses only OpenAPI keys (an
unquoted comma in a YAML flow mapping silently makes a new key), and every field is described."""
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
SCHEMA_KEYS = {"type", "description", "properties", "items", "required", "enum", "default",
               "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems", "maxProperties",
               "format", "additionalProperties", "anyOf", "x-kubernetes-preserve-unknown-fields",
               "x-kubernetes-int-or-string", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
               "x-kubernetes-validations"}


def walk(node, path):
    assert isinstance(node, dict), path
    unknown = set(node) - SCHEMA_KEYS
    assert not unknown, f"{path}: not schema keys: {unknown}"
    for name, sub in (node.get("properties") or {}).items():
        p = f"{path}.{name}"
        if name not in ("apiVersion", "kind", "metadata") or path != "":
            assert sub.get("description") or name == "metadata", f"{p} has no description"
        walk(sub, p)
    if isinstance(node.get("items"), dict):
        walk(node["items"], path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        walk(node["additionalProperties"], path + "{}")


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.stem)
def test_crd_schema_is_what_we_meant(path):
    crd = yaml.safe_load(path.read_text())
    for v in crd["spec"]["versions"]:
        walk(v["schema"]["openAPIV3Schema"], "")
        assert v.get("subresources") == {"status": {}}
    assert "gs" not in crd["spec"]["names"].get("shortNames", [])  # Agones' name
