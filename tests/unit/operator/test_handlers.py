"""The handlers: the kopf ones called as kopf calls them (the raw event and kopf's read-only
body view), the watch streams' as the streams call them (watches.Reflector). What they put in
the cache and which keys they queue; kopf and the streams themselves are exercised end to end."""
import asyncio
import copy

import kopf
import pytest

from fake_kube import FakeKube
from fixtures import gameserver, queued

from peon.operator import handlers, kinds
from peon.operator.controller import Controller


@pytest.fixture
def controller():
    return Controller(FakeKube(), workers=1, job_image="peon.invalid/job:1")


def stream(kind, controller, type_, obj):
    """Hand `obj` to the kind's event function, as its watch stream does."""
    handlers.on_event(controller, kind)(type_, obj)


def call(handler, controller, type_, obj):
    """Invoke `handler` with the keyword arguments kopf gives an event handler."""
    meta = obj["metadata"]
    return asyncio.run(handler(event={"type": type_, "object": obj}, body=kopf.Body(obj),
                               namespace=meta.get("namespace"), name=meta["name"],
                               memo=kopf.Memo(controller=controller), logger=None))


def pod(rv="1", ready="False"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "odin-abc", "namespace": "games", "resourceVersion": rv,
                         "labels": {"peon.dev/gameserver": "odin"},
                         "managedFields": [{"manager": "kwok"}]},
            "spec": {"nodeName": "kwok-0", "containers": [{"name": "game", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}}


def test_a_pod_event_is_cached_slim_and_wakes_its_server_once(controller):
    stream("Pod", controller, "ADDED", pod())
    cached = controller.cache.pods[("games", "odin-abc")]
    assert "managedFields" not in cached["metadata"] and "containers" not in cached["spec"]
    assert controller.cache.pods_of("games", "odin") == [cached]
    assert queued(controller) == [("GameServer", "games", "odin")]
    # The same pod again at a new resourceVersion, nothing else changed: no news.
    stream("Pod", controller, "MODIFIED", pod(rv="2"))
    assert queued(controller) == []
    stream("Pod", controller, "MODIFIED", pod(rv="3", ready="True"))
    assert queued(controller) == [("GameServer", "games", "odin")]
    stream("Pod", controller, "DELETED", pod(rv="4", ready="True"))
    assert controller.cache.pods_of("games", "odin") == []
    assert queued(controller) == [("GameServer", "games", "odin")]


def test_the_echo_of_the_operators_own_status_write_queues_nothing(controller):
    gs = gameserver()
    gs["metadata"]["resourceVersion"] = "5"
    call(handlers.KOPF_HANDLERS["GameServer"], controller, "ADDED", gs)
    assert queued(controller) == [("GameServer", "games", "odin")]
    written = copy.deepcopy(gs)
    written["metadata"]["resourceVersion"] = "6"
    written["status"] = {"phase": "Pending"}
    controller.cache.put(controller.cache.gameservers, ("games", "odin"), written, False)
    call(handlers.KOPF_HANDLERS["GameServer"], controller, "MODIFIED", copy.deepcopy(written))
    assert queued(controller) == []


def test_a_child_event_wakes_the_server_its_label_names(controller):
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "odin-files", "namespace": "games", "resourceVersion": "7",
                       "labels": {"app.kubernetes.io/managed-by": "peon",
                                  "peon.dev/gameserver": "odin"}},
          "data": {"motd.txt": "hello"}}
    stream("ConfigMap", controller, "ADDED", cm)
    assert controller.cache.children[("ConfigMap", "games", "odin-files")]["data"] == cm["data"]
    assert queued(controller) == [("GameServer", "games", "odin")]


def test_a_users_secret_never_comes_through_the_streams(controller):
    """The Secrets' stream asks the API server for the operator's own only; the users'
    Secrets are read by name (secret_refs), never kept from a stream."""
    assert kinds.BY_KIND["Secret"].selector == kinds.MANAGED == "app.kubernetes.io/managed-by=peon-operator"
    gs = gameserver(settings=[{"type": "env", "name": "env", "secretRef": {"name": "creds"}}])
    controller.cache.put(controller.cache.gameservers, ("games", "odin"), gs, False)
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "odin-env", "namespace": "games", "resourceVersion": "9",
                           "labels": {"app.kubernetes.io/managed-by": "peon",
                                      "peon.dev/gameserver": "odin"}},
              "data": {"SERVER_PASS": "aHVudGVyMjI="}}
    stream("Secret", controller, "ADDED", secret)
    assert ("Secret", "games", "odin-env") in controller.cache.children
    assert controller.cache.secrets == {}
    assert queued(controller) == [("GameServer", "games", "odin")]


def test_each_kind_is_watched_once_by_kopf_or_a_stream_and_each_kopf_kind_is_registered():
    """The table is the one list: every kind in it has one watcher, kopf has a handler for each
    of its rows (and no other), and the streams take the rest."""
    from peon.operator import watches
    from peon.operator.namespaces import Scope
    assert len({w.kind for w in kinds.WATCHED}) == len(kinds.WATCHED)
    assert set(handlers.KOPF_HANDLERS) == {w.kind for w in kinds.watched_by(kinds.KOPF)}
    streamed = {s.kind for s in watches.streams_for(Scope())}
    assert streamed == {w.kind for w in kinds.watched_by(kinds.STREAM)}
    assert not streamed & set(handlers.KOPF_HANDLERS)


def test_a_kopf_kinds_listed_object_goes_through_its_event_function(controller):
    """kopf's event for an object it listed (type None) caches it and queues it."""
    game = {"apiVersion": "peon.dev/v1alpha1", "kind": "Game",
            "metadata": {"name": "valheim", "resourceVersion": "3"}, "spec": {}}
    call(handlers.KOPF_HANDLERS["Game"], controller, None, game)
    assert "valheim" in controller.cache.games
    assert queued(controller) == [("Game", "", "valheim")]
