"""Asleep, never away (issue 25), on the bed's real node: the wake gate runs as a pod there (the
operator's image, `peon-gate --cluster`, its own least RBAC), the operator as users run it with
--gate-namespace, and the test game is the server. Every packet goes to a Service whose
endpoints are real pods on this machine (the game's, or the gate's): never to a kwok pod."""
from __future__ import annotations

import socket
import struct
import time

import a2s
import pytest

from conftest import Operator, fresh_namespace
from gs_helpers import wait_event
from kube_helpers import wait_for
from realnode_helpers import (NODE, OPERATOR_IMAGE, TAINT, server_pod, service_address,
                              tg_server, udp)

pytestmark = [pytest.mark.timeout(900)]
GATE_NS = "peon-gate-test"
GATE_USER = f"system:serviceaccount:{GATE_NS}:peon-gate"
CHART = __import__("pathlib").Path(__file__).resolve().parents[2] / "charts" / "peon-operator"
GATE_LABELS = {"app.kubernetes.io/component": "wake-gate", "app.kubernetes.io/instance": "test"}


def gate_kubeconfig(kubeconfig: str, token: str) -> str:
    """The bed's API server for the gate's own ServiceAccount token. The bed's API server
    listens on loopback only and its pods have no route off their bridge, so the gate pod runs
    in the node's network (hostNetwork) and reaches it there; on a real cluster (the chart) the
    gate is an ordinary pod that reaches the API through the kubernetes Service."""
    import base64
    import pathlib
    import yaml
    cfg = yaml.safe_load(pathlib.Path(kubeconfig).read_text())
    cluster = cfg["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data") or base64.b64encode(
        pathlib.Path(cluster["certificate-authority"]).read_bytes()).decode()
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gate",
        "clusters": [{"name": "bed", "cluster": {"server": cluster["server"],
                                                 "certificate-authority-data": ca}}],
        "users": [{"name": "gate", "user": {"token": token}}],
        "contexts": [{"name": "gate", "context": {"cluster": "bed", "user": "gate"}}]})


def chart_gate_rules(helm) -> list[dict]:
    """The gate's ClusterRole rules as the chart renders them (gate.enabled)."""
    import yaml
    rendered = helm("template", "t", str(CHART), "--set", "gate.enabled=true").stdout
    role, = [d for d in yaml.safe_load_all(rendered)
             if d and d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-gate")]
    return role["rules"]


def gate_objects(rules: list[dict]) -> list[dict]:
    """The gate as the chart makes it, on the real node: ServiceAccount, the chart's least RBAC
    (read GameServers, patch their status: the knock), one pod (in the node's network here:
    see gate_kubeconfig)."""
    meta = {"namespace": GATE_NS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATE_NS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "peon-gate", **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "peon-gate-test"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "peon-gate-test"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "peon-gate-test"},
         "subjects": [{"kind": "ServiceAccount", "name": "peon-gate", "namespace": GATE_NS}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "peon-gate", **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": GATE_LABELS},
                  "template": {"metadata": {"labels": GATE_LABELS}, "spec": {
                      "serviceAccountName": "peon-gate",
                      "hostNetwork": True,
                      "volumes": [{"name": "kubeconfig",
                                   "secret": {"secretName": "gate-kubeconfig"}},
                                  {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
                      "nodeSelector": {"kubernetes.io/hostname": NODE},
                      "tolerations": [{"key": TAINT, "operator": "Exists",
                                       "effect": "NoSchedule"}],
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                      "containers": [{
                          "name": "gate", "image": OPERATOR_IMAGE,
                          "imagePullPolicy": "IfNotPresent",
                          # in the node's network: listen on its address (gate/cluster.py)
                          "command": ["peon-gate", "--cluster", "--listen-address=$(POD_IP)"],
                          "env": [{"name": "KUBECONFIG", "value": "/etc/gate/kubeconfig"},
                                  {"name": "POD_IP", "valueFrom": {"fieldRef": {
                                      "fieldPath": "status.podIP"}}}],
                          "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/gate",
                                            "readOnly": True},
                                           {"name": "tmp", "mountPath": "/tmp"}],
                          "securityContext": {"allowPrivilegeEscalation": False,
                                              "readOnlyRootFilesystem": True,
                                              "capabilities": {"drop": ["ALL"]}}}]}}}},
    ]


@pytest.fixture(scope="module")
def gate(kube, kubectl, kubeconfig, helm, real_node, testgame):  # noqa: F811
    import json
    objects = gate_objects(chart_gate_rules(helm))
    kubectl("apply", "--server-side", "-f", "-",
            input="\n---\n".join(json.dumps(o) for o in objects[:2]))  # namespace, account
    token = kubectl("-n", GATE_NS, "create", "token", "peon-gate", "--duration=2h").stdout.strip()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "gate-kubeconfig", "namespace": GATE_NS},
              "stringData": {"kubeconfig": gate_kubeconfig(kubeconfig, token)}}
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(secret))
    docs = "\n---\n".join(json.dumps(o) for o in objects[2:])
    kubectl("apply", "--server-side", "-f", "-", input=docs)
    # A fresh pod: the image's tag is the same from run to run, its code is this checkout's.
    old = {p["metadata"]["uid"] for p in kube.list("Pod", GATE_NS,
                                                   "app.kubernetes.io/component=wake-gate")}
    # ... and the old one gone first: in the node's network both would bind the same ports.
    kubectl("-n", GATE_NS, "delete", "pod", "-l", "app.kubernetes.io/component=wake-gate",
            "--wait=true", "--timeout=90s")
    def ready():
        pods = [p for p in kube.list("Pod", GATE_NS, "app.kubernetes.io/component=wake-gate")
                if p["metadata"]["uid"] not in old and not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions") or [])]
        return pods[0] if pods else None
    pod = wait_for("the gate pod ready", ready, 120, interval=0.5)
    yield pod


@pytest.fixture
def wns(kube):
    """Namespaces of their own (w-*), watched only by this file's gate-aware operator: the
    session's real-node operator (test_realnode's, r-*) runs without the gate and would put a
    sleeping server's Service selector back."""
    yield from fresh_namespace(kube, "w")


@pytest.fixture(scope="module")
def wake_operator(kubeconfig, crds, real_node, tmp_path_factory, rn_clock, gate):  # noqa: F811
    with gate_aware_operator(kubeconfig, tmp_path_factory.mktemp("wake-operator"), "w-*",
                             rn_clock) as op:
        yield op
        # What the operator said of the gate and of failed reconciles, for the run's record.
        print("\n".join(line for line in op.log().splitlines()
                        if "wake" in line or "WARNING" in line)[-4000:])


def gate_aware_operator(kubeconfig, folder, namespaces: str, clock):
    """An operator that puts its sleeping servers (in `namespaces`) behind the test's gate."""
    return Operator.running(kubeconfig, folder / "operator.log",
                            ["--job-image", OPERATOR_IMAGE, "--namespace", namespaces,
                             "--gate-namespace", GATE_NS,
                             "--gate-selector", "app.kubernetes.io/component=wake-gate"],
                            clock_file=clock.path)


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
        kube, kubectl, wns, testgame, gate, wake_operator, rn_clock):  # noqa: F811
    ns, name = wns, "sleeper"
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

    # The API's stop: the sleep annotation at the operator's now, no spec write.
    rn_clock.reset()
    kube.merge_patch("GameServer", ns, name, {"metadata": {"annotations": {
        "peon.dev/sleep": rn_clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")}}})
    t0 = time.monotonic()
    try:
        wait_for("the server at the gate", lambda: ((kube.status_of("GameServer", ns, name)
                                                      .get("gate") or {}).get("serving")), 120)
    except AssertionError:
        pods = kubectl("-n", GATE_NS, "get", "pods", "-o", "wide", check=False).stdout
        logs = kubectl("-n", GATE_NS, "logs", "-l", "app.kubernetes.io/component=wake-gate",
                       "--tail=40", check=False)
        raise AssertionError(f"gate pods: {pods}\ngate log: {logs.stdout[-3000:]}"
                             f"{logs.stderr[-500:]}") from None
    assert game_pods(kube, ns, name) == []
    svc = kube.get("Service", ns, name)
    assert "selector" not in svc["spec"]
    assert svc["spec"]["clusterIP"] == svc_before["spec"]["clusterIP"]
    assert svc["spec"]["ports"] == svc_before["spec"]["ports"]
    slices = kube.list("EndpointSlice", ns, f"kubernetes.io/service-name={name}")
    ours = [s for s in slices if s["metadata"]["labels"].get(
        "endpointslice.kubernetes.io/managed-by") == "operator.peon.dev"]
    assert len(ours) == 1 and ours[0]["endpoints"][0]["addresses"] == [gate["status"]["podIP"]]

    try:
        asleep = wait_for("the gate's A2S answer at the same address",
                          lambda: (i := info(query)) and "join to wake" in i.map_name and i, 60,
                          interval=0.5)
    except AssertionError:
        logs = kubectl("-n", GATE_NS, "logs", gate["metadata"]["name"], check=False)
        raise AssertionError(f"gate log: {logs.stdout[-3000:]} {logs.stderr[-500:]}\n"
                             f"status.gate: {kube.status_of('GameServer', ns, name).get('gate')}"
                             f"\nslice: {ours}") from None
    print(f"at the gate {time.monotonic() - t0:.1f}s after the stop")
    assert asleep.server_name == name and asleep.player_count == 0
    assert a2s.players(query, timeout=2) == []
    assert isinstance(a2s.rules(query, timeout=2), dict)

    # 20 queries, at a server browser's pace (the gate allows a source 10 datagrams a second
    # for a server, and a query is two: challenge and answer), wake nothing.
    for _ in range(20):
        assert info(query, timeout=2) is not None
        time.sleep(0.25)
    # A flood of garbage on the game port wakes nothing, and the gate keeps answering (once the
    # flood's source has its tokens back).
    for _ in range(100):
        for junk in (b"", b"\x00\x00", b"GET / HTTP/1.1\r\n\r\n",
                     b"\xff\xff\xff\xffTSource Engine Query\x00", b"\x16\x03\x01\x00\x05hello"):
            send(game, junk)
    time.sleep(5)
    assert info(query, timeout=2) is not None
    st = kube.status_of("GameServer", ns, name)
    assert "knock" not in st and game_pods(kube, ns, name) == []
    assert "peon.dev/wake" not in (kube.get("GameServer", ns, name)["metadata"]
                                   .get("annotations") or {})

    # A player's join on the game port wakes it; the game then answers at the same address.
    rn_clock.reset()  # the operator's clock moves on to the real time: the knock is later
    t_knock = time.monotonic()
    send(game, b"JOIN alice hunter22")
    # (a bool: wait_for takes a string for an error's text)
    wait_for("the wake annotation", lambda: "peon.dev/wake" in (
        kube.get("GameServer", ns, name)["metadata"].get("annotations") or {}), 30, interval=0.2)
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
    wait_event(kube, ns, name, "WokenByKnock")
    svc_after = kube.get("Service", ns, name)
    assert svc_after["spec"]["selector"] == {"peon.dev/gameserver": name}
    assert svc_after["spec"]["clusterIP"] == svc_before["spec"]["clusterIP"]
    wait_for("the gate's slice gone", lambda: not [
        s for s in kube.list("EndpointSlice", ns, f"kubernetes.io/service-name={name}")
        if s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
        == "operator.peon.dev"], 30)
    assert kube.get("GameServer", ns, name)["spec"].get("state", "Running") == "Running"


def test_outside_its_window_the_gate_says_when_it_opens_and_a_join_wakes_nothing(
        kube, kubectl, wns, testgame, gate, wake_operator, rn_clock):  # noqa: F811
    import datetime as dt
    import json
    ns, name = wns, "nightowl"
    rn_clock.reset()
    started = rn_clock.now()
    opens = started + dt.timedelta(hours=3)
    closes = opens + dt.timedelta(hours=1)
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(tg_server(
        name, ns, uptime={"windows": [{"start": f"{opens:%H:%M}", "end": f"{closes:%H:%M}"}]})))
    wait_for("the server at the gate", lambda: ((kube.status_of("GameServer", ns, name)
                                                  .get("gate") or {}).get("serving")), 120)
    query = service_address(kube, ns, name, "query")
    game = service_address(kube, ns, name, "game")
    answer = wait_for("the gate's answer", lambda: info(query), 60, interval=0.5)
    # The gate names the day when the window opens on another day than today: from 21:00 on,
    # three hours ahead is tomorrow. The gate's "today" may come from a slightly older event, so
    # a day it names when the test's clock says today is allowed; it must be the right day.
    if opens.date() != started.date():
        assert f"wakes at {opens:%a %H:%M}" in answer.map_name, answer.map_name
    else:
        assert (f"wakes at {opens:%H:%M}" in answer.map_name
                or f"wakes at {opens:%a %H:%M}" in answer.map_name), answer.map_name
    send(game, b"JOIN alice hunter22")
    told = wait_for("the knock told", lambda: kube.status_of("GameServer", ns, name)
                    .get("lastKnock"), 30, interval=0.5)
    assert told["outcome"].startswith("outside its hours")
    assert "peon.dev/wake" not in (kube.get("GameServer", ns, name)["metadata"]
                                   .get("annotations") or {})
    time.sleep(3)
    assert game_pods(kube, ns, name) == []
    wait_event(kube, ns, name, "KnockIgnored")


# --- Minecraft: the test game's Minecraft mode ---------------------------------------------------

MC_GAME_FILE = __import__("pathlib").Path(__file__).resolve().parents[1] / "realnode" / \
    "testgame" / "game-minecraft.yaml"


def mc_packet(pid: int, body: bytes) -> bytes:
    from peon.shared.players import varint
    data = varint(pid) + body
    return varint(len(data)) + data


def mc_first_packet(address, payload: bytes) -> tuple[int, bytes] | None:
    """Send, read what comes back (at most 64 KiB, 3 s), return the first packet (id, body)."""
    from peon.shared import players
    try:
        with socket.create_connection(address, timeout=3) as s:
            s.sendall(payload)
            data = b""
            while len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                try:
                    length, at = players.parse_varint(data, 0)
                except players.Garbled:
                    continue
                if len(data) >= at + length:
                    break
    except OSError:
        return None
    try:
        length, at = players.parse_varint(data, 0)
        pid, at2 = players.parse_varint(data, at)
    except Exception:
        return None
    return pid, data[at2:at + length]


def mc_status(address) -> dict | None:
    """The server-list ping's status JSON."""
    import json
    from peon.shared import players
    got = mc_first_packet(address, players.minecraft_request(address[0], address[1]))
    if not got or got[0] != 0:
        return None
    length, at = players.parse_varint(got[1], 0)
    return json.loads(got[1][at:at + length].decode())


def mc_login(address, name: str) -> tuple[int, bytes] | None:
    from peon.shared.players import varint
    host = address[0].encode()
    hs = varint(767) + varint(len(host)) + host + struct.pack(">H", address[1]) + varint(2)
    return mc_first_packet(address, mc_packet(0, hs) + mc_packet(0, varint(len(name)) +
                                                                 name.encode() + bytes(16)))


def test_minecraft_a_status_ping_wakes_nothing_and_a_login_does(
        kube, kubectl, wns, testgame, gate, wake_operator, rn_clock):  # noqa: F811
    import json
    kubectl("apply", "--server-side", "-f", str(MC_GAME_FILE))
    ns, name = wns, "blocky"
    rn_clock.reset()
    server = tg_server(name, ns, gameUid="peon-testgame-mc")
    server["metadata"]["annotations"] = {
        "peon.dev/sleep": rn_clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")}  # asleep from the start
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(server))
    wait_for("the server at the gate", lambda: ((kube.status_of("GameServer", ns, name)
                                                  .get("gate") or {}).get("serving")), 120)
    address = service_address(kube, ns, name, "game")
    status = wait_for("the gate's status answer", lambda: mc_status(address), 60, interval=0.5)
    assert "join to wake" in json.dumps(status) and status["players"]["online"] == 0
    for _ in range(5):
        assert mc_status(address) is not None
    time.sleep(3)
    assert "knock" not in kube.status_of("GameServer", ns, name)
    assert game_pods(kube, ns, name) == []

    rn_clock.reset()
    got = mc_login(address, "alice")
    if got is None:
        logs = kubectl("-n", GATE_NS, "logs", gate["metadata"]["name"], check=False)
        raise AssertionError(f"no answer to a login at {address}; gate log: "
                             f"{logs.stdout[-3000:]} {logs.stderr[-500:]}")
    pid, body = got
    assert pid == 0 and b"join again" in body   # Login Disconnect: starting, join again in N s
    told = wait_for("the knock told", lambda: kube.status_of("GameServer", ns, name)
                    .get("lastKnock"), 30, interval=0.5)
    assert told["outcome"] == "woke" and told["player"] == "alice"
    wait_event(kube, ns, name, "WokenByKnock", "alice")
    up = wait_for("the game's own status at the same address",
                  lambda: (s := mc_status(address)) and "join to wake" not in json.dumps(s) and s,
                  180, interval=0.5)
    assert up["description"]["text"] == name
    # The address is the game's alone once the gate's slice is gone (until then kube-proxy may
    # still send a connection to the gate, which stopped listening: the client joins again).
    wait_for("the gate's slice gone", lambda: not [
        s for s in kube.list("EndpointSlice", ns, f"kubernetes.io/service-name={name}")
        if s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
        == "operator.peon.dev"], 30)
    pid, body = wait_for("the game's Login Success", lambda: mc_login(address, "alice"), 15,
                         interval=1)
    assert pid == 2 and b"alice" in body        # the game's Login Success: the player is in


def test_the_gate_used_exactly_the_charts_rbac(gate, helm):
    """Last in this module, after the gate served, knocked and followed the servers above: the
    API server's audit log shows its account used exactly what the chart grants it (no fewer:
    it would have been refused; no more: the grant is the least)."""
    import os
    from test_rbac import used_rules
    if os.environ.get("KUBECONFIG"):
        pytest.skip("reads the test bed's audit log")
    granted = {(g, res, v) for r in chart_gate_rules(helm) for g in r["apiGroups"]
               for res in r["resources"] for v in r["verbs"]}
    used = used_rules(GATE_USER, ("peon-gate",))
    assert used == granted, f"used, not granted: {sorted(used - granted)}; " \
                            f"granted, never used: {sorted(granted - used)}"
