"""Helpers for GameServer tests: wait for phases, read what the operator wrote."""
from __future__ import annotations

import json
import pathlib

from kube_helpers import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
AUDIT = ROOT / ".cluster" / "logs" / "audit.log"


def gameserver(name: str, ns: str, **spec) -> dict:
    base = {"gameUid": "valheim", "serverName": name,
            "settings": [{"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}}]}
    base.update(spec)
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
            "metadata": {"name": name, "namespace": ns}, "spec": base}


def apply_as_user(kube, obj: dict) -> dict:
    """Apply as a user would (kubectl's field manager), never as the operator."""
    kind, meta = obj["kind"], obj["metadata"]
    from peon.shared.kube import path
    return kube.raw("PATCH", path(kind, meta.get("namespace"), meta["name"]), obj,
                    content_type="application/apply-patch+yaml",
                    query=[("fieldManager", "kubectl"), ("force", "true")])


def wait_phase(kube, ns: str, name: str, phase: str, timeout: float = 60) -> dict:
    def reached():
        gs = kube.get("GameServer", ns, name)
        st = (gs or {}).get("status") or {}
        if st.get("phase") == phase and st.get("observedGeneration") == gs["metadata"]["generation"]:
            return gs
        return f"phase {st.get('phase')!r}, conditions {st.get('conditions')}"
    return wait_for(f"{ns}/{name} to be {phase}", reached, timeout)


def condition(obj: dict, type_: str) -> dict:
    """The condition of that type, or {} while the operator has not written it."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def events_for(kube, ns: str, name: str) -> list[dict]:
    return [e for e in kube.list("Event", ns) if e["involvedObject"]["name"] == name]


def wait_event(kube, ns: str, name: str, reason: str | None, *texts: str,
               timeout: float = 30) -> dict:
    """The object's first Event with this reason (any, when None) and every one of `texts` in
    its message, waited for: the operator posts Events from a queue, after the status that
    records what they tell, so an Event may arrive a moment after the phase a test waited for."""
    def found():
        return next((e for e in events_for(kube, ns, name) if reason in (None, e["reason"])
                     and all(t in (e.get("message") or "") for t in texts)), None)
    try:
        return wait_for(f"the {reason or texts} Event of {ns}/{name}", found, timeout)
    except AssertionError as e:
        seen = [(ev["reason"], ev.get("message")) for ev in events_for(kube, ns, name)]
        raise AssertionError(f"{e}; its Events: {seen}") from None


def operator_writes(ns: str | None = None) -> list[dict]:
    """Writes the operator made, read from the test bed's apiserver audit log."""
    out = []
    lines = AUDIT.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            e = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # the API server is still writing this one
                break
            raise
        ua = e.get("userAgent", "")
        if not (ua.startswith("peon-operator") or ua.startswith("kopf")):
            continue
        if ns and e.get("objectRef", {}).get("namespace") != ns:
            continue
        if "dryRun=All" in e.get("requestURI", ""):
            continue  # a server-side dry run writes nothing
        out.append(e)
    return out


def backup(name, ns, gs, labels=None, keep=None, reason=None):
    spec = {"gameServer": gs}
    if keep is not None:
        spec["keep"] = keep
    if reason:
        spec["reason"] = reason
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServerBackup",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}


def run_phase(kube, kind, ns, name, phase, timeout=60):
    def reached():
        st = kube.status_of(kind, ns, name)
        return st if st.get("phase") == phase else f"phase {st.get('phase')!r}: {st.get('message')}"
    return wait_for(f"{kind} {name} to be {phase}", reached, timeout)


def restore(name, ns, gs, backup_name, labels=None):
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServerRestore",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"gameServer": gs, "backup": backup_name}}


def token_kubeconfig(admin_kubeconfig: str, token: str, path: pathlib.Path) -> str:
    """A kubeconfig for the same cluster that logs in with `token` (a ServiceAccount's), never
    as admin: what a pod with that account sees."""
    import yaml
    cluster = yaml.safe_load(pathlib.Path(admin_kubeconfig).read_text())["clusters"][0]["cluster"]
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}]}))
    return str(path)
