"""The operator's few kinds of API call, on the official `kubernetes` client.

Writes are server-side apply under the writer's field manager (the operator's, or a command's
of its own), creates, merge and JSON patches, and patches of a status subresource. The operator
never writes a GameServer's spec (it applies children and writes status); the PEON API writes
the spec of the servers it created, through this same client.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator
from urllib.parse import quote, urlencode

import kubernetes
import urllib3
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream as ws_stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from peon import API_VERSION, FIELD_MANAGER, __version__
from . import metrics

log = logging.getLogger(__name__)

# kind -> (api prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Event": ("/api/v1", "events", True),
    "Node": ("/api/v1", "nodes", False),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "GameServer": (f"/apis/{API_VERSION}", "gameservers", True),
    "Game": (f"/apis/{API_VERSION}", "games", False),
    "GameServerBackup": (f"/apis/{API_VERSION}", "gameserverbackups", True),
    "GameServerRestore": (f"/apis/{API_VERSION}", "gameserverrestores", True),
}


class WriteCounter:
    """Counts the API writes this process makes, by verb and kind (exported as a metric)."""

    def add(self, verb: str, kind: str) -> None:
        metrics.API_WRITES.labels(verb, kind).inc()


writes = WriteCounter()


def path(kind: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    # Names come from specs (a secretRef, a backup's name): quoted, "../configmaps/x" stays one
    # path segment, which the API server refuses, instead of naming another resource.
    p = prefix + (f"/namespaces/{quote(namespace, safe='')}" if namespaced and namespace else "") \
        + f"/{plural}"
    if name:
        p += f"/{quote(name, safe='')}"
    if subresource:
        p += f"/{subresource}"
    return p


def with_kind(obj: dict, kind: str) -> dict:
    """List items carry neither kind nor apiVersion; watch events do, and so does what render
    makes. Without them every listed child differed from its rendered self, and an operator
    restart re-applied every child of a converged cluster."""
    obj.setdefault("kind", kind)
    obj.setdefault("apiVersion", KINDS[kind][0].split("/", 2)[2])
    return obj


def load_config(cfg: kubernetes.client.Configuration) -> None:
    """Where the API is, in client-go's order: an explicit KUBECONFIG first (a pod that mounts
    one means it, as kubectl does), then the pod's service account, then ~/.kube/config."""
    if os.environ.get("KUBECONFIG"):
        kubernetes.config.load_kube_config(client_configuration=cfg)
        return
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=cfg)


LIST_PAGE = 500  # objects per page of a list


class ListExpired(Exception):
    """A paged list's continue token expired (410): the pages read so far are of a snapshot that
    is no longer whole, and the list starts again."""


def event_body(involved: dict, type_: str, reason: str, message: str) -> dict:
    meta = involved["metadata"]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"],
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}


class Kube:
    """A thread-safe handle on the API. One per process; calls block (run them off the loop)."""

    def __init__(self, api_client: ApiClient | None = None, agent: str | None = None):
        """`agent` names the writer: its field manager and its user agent (what the audit log
        and managedFields show), the operator's unless a command of its own says otherwise. A
        client given as it is keeps its own user agent unless `agent` is given."""
        if api_client is None:
            cfg = kubernetes.client.Configuration()
            load_config(cfg)
            cfg.connection_pool_maxsize = 32
            api_client = ApiClient(cfg)
            agent = agent or FIELD_MANAGER
        if agent:
            api_client.user_agent = f"{agent}/{__version__}"
            self.field_manager = agent
        self.api = api_client
        # No discovery: every path is built here (path()), so the discovery cache (and its
        # file in /tmp) would only cost requests at start.
        self.dynamic = DynamicClient(api_client, discoverer=lambda client, cache_file: None)

    def apart(self, connections: int) -> "Kube":
        """The same API, user and manager through a connection pool of its own, `connections`
        large: the watch streams each hold a connection for minutes, and in the workers' pool
        they would crowd out the reconciles' (urllib3 opens more past its size, then drops them
        when they come back, so each reconcile past it paid a new TLS handshake)."""
        cfg = copy.copy(self.api.configuration)
        cfg.connection_pool_maxsize = max(1, connections)
        client = ApiClient(cfg)
        client.user_agent = self.api.user_agent
        other = Kube(client)
        other.field_manager = self.field_manager
        return other

    def _call(self, method: str, url: str, body: Any = None, query: list | None = None,
              content_type: str = "application/json") -> Any:
        """One request and its JSON answer (None when empty); an error status raises
        ApiException (status, reason, body, headers), as the client's own calls do.

        Sent through the client's connection pool with its authentication and user agent,
        but without its serialisation layers (param_serialize, sanitize_for_serialization:
        a recursive copy of every body before json.dumps): a Deployment's apply took 2.2 ms
        of CPU through them and 1.8 ms without (against a local TLS server), and the operator
        makes about 7 writes per new server. Bodies are plain JSON (no datetime objects)."""
        api, cfg = self.api, self.api.configuration
        headers = {**api.default_headers, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        # As ApiClient.update_params_for_auth: the bearer token, through the configuration's
        # refresh hook (a service account's token file is read again as it rotates).
        for auth in cfg.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[auth["key"]] = auth["value"]
        # Escaped as the client's own calls escape a query (a "/" kept), so the audit log reads alike.
        full = cfg.host + url + ("?" + urlencode(query, safe="/", quote_via=quote) if query else "")
        resp = api.rest_client.pool_manager.request(method, full, body=data, headers=headers,
                                                    timeout=urllib3.Timeout(total=60))
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp)
        raw = resp.data
        return json.loads(raw) if raw else None

    field_manager = FIELD_MANAGER

    def get(self, kind: str, namespace: str | None, name: str,
            resource_version: str | None = None) -> dict | None:
        """The object, or None. resource_version="0" takes any version the API server has
        (its watch cache), which spares etcd a read where a moment's staleness is safe."""
        q = [("resourceVersion", resource_version)] if resource_version is not None else []
        try:
            return self._call("GET", path(kind, namespace, name), query=q)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
        return self._list(kind, namespace, selector)[0]

    def _list(self, kind: str, namespace: str | None, selector: str | None,
              limit: int = LIST_PAGE) -> tuple[list[dict], str]:
        """Every object of a list, asked for in pages (limit/continue), so the API server never
        builds one answer of 10,000 objects; the pages are one snapshot, at the version the
        last one names. A continue token that expired (410) starts the list again."""
        while True:
            items: list[dict] = []
            version = ""
            try:
                for page, version in self._pages(kind, namespace, selector, limit):
                    items += page
                return items, version
            except ListExpired:
                continue

    def _pages(self, kind: str, namespace: str | None, selector: str | None,
               limit: int) -> Iterator[tuple[list[dict], str]]:
        q = ([("labelSelector", selector)] if selector else []) + [("limit", str(limit))]
        token = None
        while True:
            try:
                got = self._call("GET", path(kind, namespace),
                                 query=q + ([("continue", token)] if token else []))
            except ApiException as e:
                if e.status == 410 and token:
                    raise ListExpired(f"the list of {kind} expired between its pages") from e
                raise
            meta = got.get("metadata") or {}
            yield got.get("items") or [], meta.get("resourceVersion", "")
            token = meta.get("continue")
            if not token:
                return

    def list_page(self, kind: str, namespace: str | None = None,
                  selector: str | None = None) -> tuple[list[dict], str]:
        """Every `kind` (matching `selector`), with its kind and apiVersion (with_kind), and the
        list's resourceVersion, from which a watch starts."""
        items, version = self._list(kind, namespace, selector)
        return [with_kind(obj, kind) for obj in items], version

    def pages(self, kind: str, namespace: str | None = None, selector: str | None = None,
              limit: int = LIST_PAGE) -> Iterator[tuple[list[dict], str]]:
        """A list one page at a time, each object with its kind and apiVersion, and the version
        the page names (the last page's is the list's: one snapshot). For a reader that keeps
        what it needs of each page and lets the page go: a restarted operator that held each
        stream's whole list, managedFields and all, before caching it peaked at 432 MiB over
        3,000 servers, 243 MiB page by page. Raises ListExpired when the snapshot went between
        two pages."""
        for items, version in self._pages(kind, namespace, selector, limit):
            yield [with_kind(obj, kind) for obj in items], version

    def watch(self, kind: str, namespace: str | None, selector: str | None, version: str,
              seconds: int) -> Iterator[dict]:
        """The watch events of `kind` after `version`, parsed, until the API server ends the
        watch (after `seconds`). BOOKMARK events carry only a newer resourceVersion; an ERROR
        event's object is a Status (code 410: `version` is too old to resume from)."""
        q = [("watch", "true"), ("resourceVersion", version), ("allowWatchBookmarks", "true"),
             ("timeoutSeconds", str(seconds))] + ([("labelSelector", selector)] if selector else [])
        # DynamicClient.request returns the urllib3 response unread (an error status raises):
        # it is read here as a stream, one event per line.
        resp = self.dynamic.request("GET", path(kind, namespace), query_params=q,
                                    header_params={"Accept": "application/json"},
                                    _request_timeout=(10, seconds + 30), serialize=False)
        try:
            rest = b""
            for chunk in resp.stream(1 << 16):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except BaseException:  # left early (GeneratorExit too): the connection is not reusable
            resp.close()
            raise
        resp.release_conn()

    def apply(self, obj: dict[str, Any]) -> dict:
        """Server-side apply: the server merges, and a no-op apply changes nothing."""
        kind, meta = obj["kind"], obj["metadata"]
        writes.add("apply", kind)
        return self._call("PATCH", path(kind, meta.get("namespace"), meta["name"]), body=obj,
                          query=[("fieldManager", self.field_manager), ("force", "true")],
                          content_type="application/apply-patch+yaml")

    def create(self, obj: dict[str, Any]) -> dict:
        writes.add("create", obj["kind"])
        return self._call("POST", path(obj["kind"], obj["metadata"].get("namespace")), body=obj,
                          query=[("fieldManager", self.field_manager)])

    def delete(self, kind: str, namespace: str | None, name: str,
               propagation: str = "Background", grace_seconds: int | None = None) -> bool:
        writes.add("delete", kind)
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if grace_seconds is not None:  # 0: a pod on a lost node, whose kubelet cannot confirm
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self._call("DELETE", path(kind, namespace, name), body=body)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: dict) -> dict:
        writes.add("patch", kind)
        return self._call("PATCH", path(kind, namespace, name), body=patch,
                          query=[("fieldManager", self.field_manager)],
                          content_type="application/merge-patch+json")

    def json_patch(self, kind: str, namespace: str | None, name: str, ops: list[dict]) -> dict:
        """A JSON patch (RFC 6902): its `test` operations make the write conditional, in one
        request (the API server refuses the whole patch, 422, when a test fails), so a caller
        that may not read an object can still write it only when it is the caller's own."""
        writes.add("patch", kind)
        return self._call("PATCH", path(kind, namespace, name), body=ops,
                          query=[("fieldManager", self.field_manager)],
                          content_type="application/json-patch+json")

    def patch_status(self, kind: str, namespace: str | None, name: str, status: dict) -> dict:
        writes.add("status", kind)
        return self._call("PATCH", path(kind, namespace, name, "status"), body={"status": status},
                          content_type="application/merge-patch+json")

    def patch_metadata(self, kind: str, namespace: str | None, name: str, metadata: dict) -> dict:
        writes.add("metadata", kind)
        return self._call("PATCH", path(kind, namespace, name), body={"metadata": metadata},
                          content_type="application/merge-patch+json")

    def event(self, involved: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `involved`, as `kubectl describe` shows them: posted now, or
        queued when the Events are posted in the background (the operator's)."""
        body = event_body(involved, type_, reason, message)
        if self._events is None:
            return self._post_event(body)
        try:
            self._events.put_nowait(body)
        except queue.Full:  # the API server far behind: an Event is worth less than a reconcile
            log.warning("event %s on %s dropped: %d waiting to be posted", reason,
                        body["involvedObject"]["name"], self._events.maxsize)

    _events: "queue.Queue[dict] | None" = None

    def post_events_in_background(self, capacity: int = 1000) -> None:
        """Events go through a queue to a thread of their own, as kopf's poster does: a
        reconcile never waits on a POST that only tells what it did."""
        self._events = queue.Queue(capacity)
        threading.Thread(target=self._post_events, daemon=True, name="event-poster").start()

    def _post_events(self) -> None:
        while True:
            self._post_event(self._events.get())

    def _post_event(self, body: dict) -> None:
        try:
            self.create(body)
        except Exception as e:  # an Event that cannot be posted must not stop anything
            log.warning("could not post event %s on %s: %s", body["reason"],
                        body["involvedObject"]["name"], getattr(e, "reason", None) or type(e).__name__)

    def exec(self, namespace: str, pod: str, container: str, command: list[str],
             timeout: float, stdout: BinaryIO | None = None) -> "ExecResult":
        """Runs `command` in a container (`kubectl exec`, without a shell or a terminal) and
        waits for it at most `timeout` seconds. With `stdout`, the command's output is written
        there byte for byte (a download) and the result holds its stderr only. Raises
        ApiException when the API server or the kubelet refuses the session."""
        writes.add("exec", "Pod")
        # stream() swaps the ApiClient's transport for a websocket while it connects: a client
        # of its own keeps the other threads' calls off it.
        core = kubernetes.client.CoreV1Api(ApiClient(self.api.configuration))
        binary = stdout is not None
        ws = ws_stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container,
                       command=list(command), stdin=False, stdout=True, stderr=True, tty=False,
                       _preload_content=False, binary=binary)
        text: list[str] = []

        def drain() -> None:
            out, err = ws.read_channel(STDOUT_CHANNEL), ws.read_channel(STDERR_CHANNEL)
            if binary:
                stdout.write(out)
                text.append(err.decode("utf-8", errors="replace"))
            else:
                text.extend((out, err))
            del text[:-64]  # a chatty command keeps only its last output

        try:
            deadline = time.monotonic() + timeout
            while ws.is_open() and time.monotonic() < deadline:
                ws.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                drain()
            drain()
            if ws.is_open():
                return ExecResult(None, "".join(text), f"still running after {timeout:g} s")
            status = ws.read_channel(ERROR_CHANNEL)
            if isinstance(status, bytes):
                status = status.decode("utf-8", errors="replace")
            code, error = exit_status(status)
            return ExecResult(code, "".join(text), error)
        finally:
            ws.close()


@dataclass(frozen=True)
class ExecResult:
    """How a command run in a container ended: its exit code (None when it did not run to its
    end), its last output, and what went wrong when it did not exit 0."""
    code: int | None
    output: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


def exit_status(error_channel: str) -> tuple[int | None, str]:
    """The exit code and error from an exec session's status channel (a metav1.Status: Success,
    or Failure with an ExitCode cause, or Failure because the command could not start)."""
    try:
        st = json.loads(error_channel or "{}")
    except ValueError:
        return None, error_channel.strip()
    if st.get("status") == "Success":
        return 0, ""
    for cause in (st.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "")), f"exit code {cause['message']}"
            except ValueError:
                break
    return None, st.get("message") or "the command did not run"


RBAC_DENIAL = re.compile(r'(User|ServiceAccount) "[^"]*" cannot ')


def refusal(e: ApiException, child: dict) -> str | None:
    """What the API server said when it refused a child for what it holds (invalid, too large,
    over a quota); None for what may pass on its own (conflicts, throttling, outages)."""
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") or e.reason or ""
    # 403 is also admission's "no": a quota, PodSecurity, a claim that cannot grow. An RBAC
    # denial ('User "..." cannot ...') is the installation's problem, and a terminating
    # namespace passes on its own: both stay transient.
    admission_no = (e.status == 403 and not RBAC_DENIAL.search(message)
                    and "being terminated" not in message)
    if e.status in (400, 413, 422) or admission_no:
        return f"the API server refused the {child['kind']} {child['metadata']['name']}: {message}"
    return None
