"""An in-memory stand-in for `peon.shared.kube.Kube`, for driving reconcilers in unit tests (as
Agones' tests drive its controller through a fake). It keeps objects by (kind, namespace, name),
records every call, and refuses what a test tells it to, with the API server's shape of error."""
from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes.client.rest import ApiException

from peon.shared.kube import ExecResult


def api_error(status: int, message: str) -> ApiException:
    e = ApiException(status=status, reason="refused")
    e.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return e


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch: objects merge, null removes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def selects(selector: str | None, labels: dict) -> bool:
    """An equality-based label selector, as the API server reads one: `k=v`, `k==v`, `k!=v`,
    `k` (has it), `!k` (has it not), joined by commas."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = (x.strip() for x in term.split("!=", 1))
            ok = labels.get(k) != v
        elif "=" in term:
            k, v = (x.strip() for x in term.replace("==", "=").split("=", 1))
            ok = labels.get(k) == v
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.lists: list[tuple[str, str | None, str | None]] = []  # (kind, namespace, selector)
        self.refuse: dict[str, ApiException] = {}    # kind -> the error its applies get
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.execs: list[tuple[str, tuple[str, ...]]] = []  # (pod, command), in order
        self.exec_results: dict[tuple[str, ...], ExecResult | ApiException] = {}  # else exit 0
        self._rv = 0

    def _stored(self, obj: dict) -> dict:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        obj["metadata"].setdefault("uid", f"uid-{self._rv}")  # as the API server gives one
        return obj

    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] != "dry-run"]

    def get(self, kind: str, namespace: str | None, name: str,
            resource_version: str | None = None) -> dict | None:
        self.calls.append(("get", kind, name))
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
        self.lists.append((kind, namespace, selector))
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == kind and namespace in (None, ns)
                and selects(selector, o["metadata"].get("labels") or {})]

    def apply(self, obj: dict[str, Any]) -> dict:
        kind, meta = obj["kind"], obj["metadata"]
        self.calls.append(("apply", kind, meta["name"]))
        if kind in self.refuse:
            raise self.refuse[kind]
        stored = self._stored(obj)
        self.objects[(kind, meta.get("namespace"), meta["name"])] = stored
        return copy.deepcopy(stored)

    def create(self, obj: dict[str, Any]) -> dict:
        kind, meta = obj["kind"], obj["metadata"]
        self.calls.append(("create", kind, meta.get("name", "")))
        if kind in self.refuse:
            raise self.refuse[kind]
        key = (kind, meta.get("namespace"), meta.get("name"))
        if key in self.objects:  # as the API server: a create never replaces
            raise api_error(409, f'{kind.lower()}s "{meta["name"]}" already exists')
        stored = self._stored(obj)
        if kind != "Event":
            self.objects[key] = stored
        return copy.deepcopy(stored)

    def exec(self, namespace: str, pod: str, container: str, command: list[str],
             timeout: float) -> ExecResult:
        self.calls.append(("exec", "Pod", pod))
        self.execs.append((pod, tuple(command)))
        result = self.exec_results.get(tuple(command), ExecResult(0, ""))
        if isinstance(result, ApiException):
            raise result
        return result

    def delete(self, kind: str, namespace: str | None, name: str, propagation: str = "Background",
               grace_seconds: int | None = None) -> bool:
        self.calls.append(("delete", kind, name) if grace_seconds is None
                          else ("delete", kind, name, grace_seconds))
        return self.objects.pop((kind, namespace, name), None) is not None

    def _patch(self, verb: str, kind: str, namespace: str | None, name: str, patch: dict) -> dict:
        self.calls.append((verb, kind, name))
        key = (kind, namespace, name)
        if key not in self.objects:
            raise api_error(404, f"{kind} {name} not found")
        self.objects[key] = self._stored(merge_patch(self.objects[key], patch))
        return copy.deepcopy(self.objects[key])

    def json_patch(self, kind, namespace, name, ops):
        """RFC 6902's test, add and remove, as the API server applies them: all or nothing."""
        self.calls.append(("patch", kind, name))
        key = (kind, namespace, name)
        if key not in self.objects:
            raise api_error(404, f"{kind} {name} not found")
        obj = copy.deepcopy(self.objects[key])
        for op in ops:
            *parents, last = [p.replace("~1", "/").replace("~0", "~")
                              for p in op["path"].split("/")[1:]]
            target = obj
            for p in parents:
                target = target.get(p) if isinstance(target, dict) else None
            if op["op"] == "test":
                if not isinstance(target, dict) or target.get(last, object()) != op["value"]:
                    raise api_error(422, f"testing value {op['path']} failed")
            elif op["op"] == "add":
                target[last] = copy.deepcopy(op["value"])
            elif op["op"] == "remove":
                target.pop(last)
        self.objects[key] = self._stored(obj)
        return copy.deepcopy(self.objects[key])

    def merge_patch(self, kind, namespace, name, patch):
        return self._patch("patch", kind, namespace, name, patch)

    def patch_status(self, kind, namespace, name, status):
        return self._patch("status", kind, namespace, name, {"status": status})

    def patch_metadata(self, kind, namespace, name, metadata):
        return self._patch("metadata", kind, namespace, name, {"metadata": metadata})

    def event(self, involved: dict, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))
