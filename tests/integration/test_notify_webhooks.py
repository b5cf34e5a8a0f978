"""Notifications through real HTTP on loopback: a receiver of our own checks each message's
Discord-shaped JSON; a webhook that fails is said as a Warning (without its URL) and one that
never answers slows no server's reconcile."""
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from gs_helpers import apply_as_user, events_for, gameserver, wait_phase
from kube_helpers import wait_for

pytestmark = pytest.mark.usefixtures("operator")


class Receiver:
    """A local webhook: /good records and answers 204, /bad answers 500, /slow answers after
    a minute (as a dead host would keep a connection), /redirect 302 to /good."""

    def __init__(self, host: str = "127.0.0.1"):
        self.got: list[tuple[str, dict]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.got.append((self.path, data))
                if self.path == "/slow":
                    time.sleep(60)
                self.send_response({"/good": 204, "/slow": 204, "/redirect": 302}.get(self.path, 500))
                if self.path == "/redirect":
                    self.send_header("Location", "/good")
                self.end_headers()

            def do_GET(self):  # what a followed redirect would turn the POST into
                receiver.got.append((self.path, {}))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self, path: str) -> list[str]:
        return [d.get("content") for p, d in self.got if p == path]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def hook_secret(kube, ns, name, url):
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                 "stringData": {"url": url}})


def test_a_server_says_it_is_up_and_why_it_stops(kube, namespace, receiver):
    hook_secret(kube, namespace, "hook", f"{receiver.url}/good")
    apply_as_user(kube, gameserver("loud", namespace, notify={"secretRef": {"name": "hook"}}))
    gs = wait_phase(kube, namespace, "loud", "Running")
    up = wait_for("the up message", lambda: [d for p, d in receiver.got if p == "/good"], 30)[0]
    address = gs["status"]["endpoint"]
    assert up["content"] == f"loud is up at {address}"
    assert up["allowed_mentions"] == {"parse": []} and up["embeds"][0]["title"] == "loud: Up"
    assert {"name": "Address", "value": address, "inline": True} in up["embeds"][0]["fields"]
    apply_as_user(kube, gameserver("loud", namespace, state="Stopped",
                                   notify={"secretRef": {"name": "hook"}}))
    wait_for("the stop message", lambda: any(t.startswith("loud is stopping: spec.state is Stopped")
                                             for t in receiver.texts("/good")), 30)
    assert receiver.texts("/good").count(f"loud is up at {address}") == 1  # said once


def test_a_failing_webhook_is_said_without_its_url_and_a_dead_one_slows_nothing(
        kube, namespace, receiver):
    hook_secret(kube, namespace, "bad-hook", f"{receiver.url}/bad")
    hook_secret(kube, namespace, "slow-hook", f"{receiver.url}/slow")
    hook_secret(kube, namespace, "hook", f"{receiver.url}/good")
    apply_as_user(kube, gameserver("failing", namespace, notify={"secretRef": {"name": "bad-hook"}}))
    apply_as_user(kube, gameserver("patient", namespace, notify={"secretRef": {"name": "slow-hook"}}))
    wait_phase(kube, namespace, "patient", "Running")
    wait_for("the dead webhook to be called", lambda: receiver.texts("/slow"), 30)
    # While that webhook holds its message, other servers run and are announced as ever.
    apply_as_user(kube, gameserver("quick", namespace, notify={"secretRef": {"name": "hook"}}))
    wait_phase(kube, namespace, "quick", "Running")
    wait_for("quick's message", lambda: any(t.startswith("quick is up") for t in receiver.texts("/good")), 30)
    apply_as_user(kube, gameserver("patient", namespace, state="Stopped",
                                   notify={"secretRef": {"name": "slow-hook"}}))
    wait_phase(kube, namespace, "patient", "Stopped")
    # The failing one: tried again with back-off, then said once as a Warning.
    warned = wait_for("a NotifyFailed Warning", lambda: [
        e for e in events_for(kube, namespace, "failing") if e["reason"] == "NotifyFailed"], 60)
    assert warned[0]["type"] == "Warning"
    assert warned[0]["message"] == "notification not sent: the webhook answered HTTP 500"
    assert len(receiver.texts("/bad")) >= 2  # retried
    assert all(receiver.url not in e["message"] for e in events_for(kube, namespace, "failing"))


def test_a_failed_backup_and_the_update_it_holds_are_told(kube, namespace, receiver):
    """A Game whose save command cannot run here (a kwok pod has no kubelet to exec in): the
    backup before an image update fails, and the update is held; both are told, in JSON."""
    import pathlib
    import yaml
    root = pathlib.Path(__file__).resolve().parents[2]
    game = yaml.safe_load((root / "examples" / "games" / "valheim.yaml").read_text())
    game["metadata"] = {"name": f"hooked-{namespace}"}
    game["spec"].pop("aliases", None)
    game["spec"]["backupHooks"] = {"before": [{"command": ["save-now"]}]}
    kube.apply(game)
    try:
        hook_secret(kube, namespace, "hook", f"{receiver.url}/good")
        notify = {"secretRef": {"name": "hook"}, "format": "json",
                  "events": ["BackupFailed", "UpdateHeld"]}
        spec = dict(gameUid=game["metadata"]["name"], notify=notify)
        apply_as_user(kube, gameserver("held", namespace, **spec))
        wait_phase(kube, namespace, "held", "Running")
        apply_as_user(kube, gameserver("held", namespace, image="ghcr.io/lloesche/valheim-server:v2",
                                       **spec))
        got = wait_for("both messages", lambda: (lambda ms: ms if {m["event"] for m in ms} >= {
            "BackupFailed", "UpdateHeld"} else None)([d for p, d in receiver.got if p == "/good"]), 90)
        failed = next(m for m in got if m["event"] == "BackupFailed")
        assert failed["server"] == "held" and failed["namespace"] == namespace
        assert "backupHooks.before command 'save-now' failed" in failed["message"]
        assert failed["backup"].startswith("held-")
        held = next(m for m in got if m["event"] == "UpdateHeld")
        assert held["message"].startswith("held's update is held")
        assert all(m["event"] in ("BackupFailed", "UpdateHeld") for m in got)  # the filter
    finally:
        kube.delete("Game", None, game["metadata"]["name"])


def test_a_webhook_is_never_redirected_nor_sent_where_the_install_does_not_allow(
        kube, namespace, receiver, operator):
    """The tests' operator allows 127.0.0.1 only: a receiver on 127.0.0.2 (loopback too, so this
    test's traffic stays on the machine) is refused before any connection; a 302 is not
    followed. Both are said once, without the URL, and the operator's log never holds it."""
    elsewhere = Receiver("127.0.0.2")
    try:
        hook_secret(kube, namespace, "moved", f"{receiver.url}/redirect")
        hook_secret(kube, namespace, "inside", f"{elsewhere.url}/good")
        apply_as_user(kube, gameserver("moved", namespace, notify={"secretRef": {"name": "moved"}}))
        apply_as_user(kube, gameserver("inside", namespace,
                                       notify={"secretRef": {"name": "inside"}}))

        def warning(server):
            return lambda: [e for e in events_for(kube, namespace, server)
                            if e["reason"] == "NotifyFailed"]
        moved = wait_for("the redirect's Warning", warning("moved"), 60)
        assert [e["message"] for e in moved] == [
            "notification not sent: the webhook answered HTTP 302"]
        inside = wait_for("the refusal's Warning", warning("inside"), 60)
        assert [e["message"] for e in inside] == [
            "notification not sent: refused: the webhook's address 127.0.0.2 is loopback, "
            "not allowed by this install"]
        assert [p for p, _ in receiver.got] == ["/redirect"]  # /good never reached
        assert elsewhere.got == []  # never connected to
        log = operator.log()
        assert receiver.url not in log and elsewhere.url not in log
        assert "Task exception was never retrieved" not in log
    finally:
        elsewhere.server.shutdown()
