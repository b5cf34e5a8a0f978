"""Asleep, never away (issue 25), on the bed's real node: the wake gate runs as a pod there (the
operator's image, `peon-gate --cluster`, its own least RBAC), the operator as users run it with
--gate-namespace, and the test game is the server. Every packet goes to a Service whose
endpoints are real pods on this machine (the game's, or the gate's): never to a kwok pod."""
from __future__ import annotations

import socket
import time

import a2s
import pytest

from conftest import Operator
from gs_helpers import events_for
from kube_helpers import wait_for
from realnode_helpers import (NODE, OPERATOR_IMAGE, TAINT, server_pod, service_address,
                              tg_server, udp)
from test_realnode import real_node, rn_clock, rns, testgame  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(900)
GATE_NS = "peon-gate-test"
GATE_LABELS = {"app.kubernetes.io/component": "wake-gate", "app.kubernetes.io/instance": "test"}


def gate_objects() -> list[dict]:
    """The gate as the chart makes it, on the real node: ServiceAccount, the least RBAC
    (read GameServers, patch their status: the knock), one pod."""
    meta = {"namespace": GATE_NS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATE_NS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "peon-gate", **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "peon-gate-test"},
         "rules": [{"apiGroups": ["peon.dev"], "resources": ["gameservers"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["peon.dev"], "resources": ["gameservers/status"],
                    "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "peon-gate-test"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "peon-gate-test"},
         "subjects": [{"kind": "ServiceAccount", "name": "peon-gate", "namespace": GATE_NS}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "peon-gate", **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": GATE_LABELS},
                  "template": {"metadata": {"labels": GATE_LABELS}, "spec": {
                      "serviceAccountName": "peon-gate",
                      "nodeSelector": {"kubernetes.io/hostname": NODE},
                      "tolerations": [{"key": TAINT, "operator": "Exists",
                                       "effect": "NoSchedule"}],
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                      "containers": [{
                          "name": "gate", "image": OPERATOR_IMAGE,
                          "imagePullPolicy": "IfNotPresent",
                          "command": ["peon-gate", "--cluster"],
                          "securityContext": {"allowPrivilegeEscalation": False,
                                              "readOnlyRootFilesystem": True,
                                              "capabilities": {"drop": ["ALL"]}}}]}}}},
    ]


@pytest.fixture(scope="module")
def gate(kube, kubectl, real_node, testgame):  # noqa: F811
    import json
    docs = "\n---\n".join(json.dumps(o) for o in gate_objects())
    kubectl("apply", "--server-side", "-f", "-", input=docs)
    def ready():
        pods = [p for p in kube.list("Pod", GATE_NS, "app.kubernetes.io/component=wake-gate")
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in p.get("status", {}).get("conditions") or [])]
        return pods[0] if pods else None
    pod = wait_for("the gate pod ready", ready, 120, interval=0.5)
    yield pod


@pytest.fixture(scope="module")
def wake_operator(kubeconfig, crds, real_node, tmp_path_factory, rn_clock, gate):  # noqa: F811
    op = Operator(kubeconfig, tmp_path_factory.mktemp("wake-operator") / "operator.log",
                  ["--job-image", OPERATOR_IMAGE, "--namespace", "r-*",
                   "--gate-namespace", GATE_NS,
                   "--gate-selector", "app.kubernetes.io/component=wake-gate"],
                  clock_file=rn_clock.path)
    time.sleep(0.5)
    assert op.proc.poll() is None, op.log()
    yield op
    op.stop()
    assert "Traceback" not in op.log(), op.log()[-3000:]


def info(address, timeout=1.0):
    try:
        return a2s.info(address, timeout=timeout)
    except (OSError, a2s.BrokenMessageError):
        return None


def game_pods(kube, ns, name):
    return [p for p in kube.list("Pod", ns, f"peon.dev/gameserver={name}")
            if not p["metadata"].get("deletionTimestamp")]


def send(address, payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, address)


def test_asleep_the_address_answers_from_the_gate_and_a_join_wakes_the_game_there(
        kube, kubectl, rns, testgame, gate, wake_operator):  # noqa: F811
    ns, name = rns, "sleeper"
    t_apply = time.monotonic()
    kubectl("apply", "--server-side", "-f", "-", input=__import__("json").dumps(
        tg_server(name, ns, uptime={"session": {"maxDuration": "2h"}})))
    server_pod(kube, ns, name)
    svc_before = kube.get("Service", ns, name)
    query = service_address(kube, ns, name, "query")
    game = service_address(kube, ns, name, "game")
    awake = wait_for("the game's own A2S answer", lambda: info(query), 60, interval=0.5)
    assert "join to wake" not in awake.map_name
    print(f"\nstate Running, apply to the game answering: {time.monotonic() - t_apply:.1f}s")

    # The API's stop: the sleep annotation, no spec write.
    kube.merge_patch("GameServer", ns, name, {"metadata": {"annotations": {
        "peon.dev/sleep": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}})
    t0 = time.monotonic()
    wait_for("the server at the gate", lambda: ((kube.status_of("GameServer", ns, name)
                                                  .get("gate") or {}).get("serving")), 120)
    assert game_pods(kube, ns, name) == []
    svc = kube.get("Service", ns, name)
    assert "selector" not in svc["spec"]
    assert svc["spec"]["clusterIP"] == svc_before["spec"]["clusterIP"]
    assert svc["spec"]["ports"] == svc_before["spec"]["ports"]
    slices = kube.list("EndpointSlice", ns, f"kubernetes.io/service-name={name}")
    ours = [s for s in slices if s["metadata"]["labels"].get(
        "endpointslice.kubernetes.io/managed-by") == "peon.dev/operator"]
    assert len(ours) == 1 and ours[0]["endpoints"][0]["addresses"] == [gate["status"]["podIP"]]

    asleep = wait_for("the gate's A2S answer at the same address",
                      lambda: (i := info(query)) and "join to wake" in i.map_name and i, 60,
                      interval=0.5)
    print(f"at the gate {time.monotonic() - t0:.1f}s after the stop")
    assert asleep.server_name == name and asleep.player_count == 0
    assert a2s.players(query, timeout=2) == []
    assert isinstance(a2s.rules(query, timeout=2), dict)

    # 20 queries and garbage on the game port wake nothing.
    for _ in range(20):
        assert info(query, timeout=2) is not None
    for junk in (b"", b"\x00\x00", b"GET / HTTP/1.1\r\n\r\n", b"\xff\xff\xff\xffTSource Engine"
                 b" Query\x00", b"\x16\x03\x01\x00\x05hello"):
        send(game, junk)
    time.sleep(5)
    st = kube.status_of("GameServer", ns, name)
    assert "knock" not in st and game_pods(kube, ns, name) == []
    assert "peon.dev/wake" not in (kube.get("GameServer", ns, name)["metadata"]
                                   .get("annotations") or {})

    # A player's join on the game port wakes it; the game then answers at the same address.
    t_knock = time.monotonic()
    send(game, b"JOIN alice hunter22")
    woke = wait_for("the wake annotation", lambda: (kube.get("GameServer", ns, name)["metadata"]
                                                   .get("annotations") or {}).get("peon.dev/wake"),
                    30, interval=0.2)
    assert woke
    up = wait_for("the game's own answer at the same address",
                  lambda: (i := info(query)) and "join to wake" not in i.map_name and i, 180,
                  interval=0.5)
    print(f"knock to the game answering: {time.monotonic() - t_knock:.1f}s")
    assert up.server_name == name
    # the player's client tries again: the game itself lets it in
    assert udp(*game, "JOIN alice hunter22") == "WELCOME alice"
    st = kube.status_of("GameServer", ns, name)
    assert st["lastKnock"]["outcome"] == "woke" and st["lastKnock"]["address"]
    assert st["uptime"]["reason"] == "WokenUp"
    assert any(e["reason"] == "WokenByKnock" for e in events_for(kube, ns, name))
    svc_after = kube.get("Service", ns, name)
    assert svc_after["spec"]["selector"] == {"peon.dev/gameserver": name}
    assert svc_after["spec"]["clusterIP"] == svc_before["spec"]["clusterIP"]
    wait_for("the gate's slice gone", lambda: not [
        s for s in kube.list("EndpointSlice", ns, f"kubernetes.io/service-name={name}")
        if s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
        == "peon.dev/operator"], 30)
    assert kube.get("GameServer", ns, name)["spec"].get("state", "Running") == "Running"
