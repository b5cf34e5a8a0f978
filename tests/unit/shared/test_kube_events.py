"""Events posted in the background (the operator's): a reconcile never waits on their POST."""
import logging
import threading

from peon.shared.kube import Kube

SERVER = {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
          "metadata": {"name": "odin", "namespace": "games", "uid": "u-1"}}


def kube_with(create):
    k = Kube.__new__(Kube)  # no API client: create is the one call an Event makes
    k.create = create
    return k


def test_an_event_is_queued_at_once_and_posted_in_order_behind_a_slow_api_server():
    release, posted = threading.Event(), []

    def create(body):
        release.wait(10)
        posted.append(body["reason"])
    k = kube_with(create)
    k.post_events_in_background()
    for reason in ("Applied", "AutoStart", "BackupStarted"):
        k.event(SERVER, "Normal", reason, "...")  # returns though the POST hangs
    assert posted == []
    release.set()
    for _ in range(100):
        if len(posted) == 3:
            break
        threading.Event().wait(0.05)
    assert posted == ["Applied", "AutoStart", "BackupStarted"]


def test_a_full_queue_drops_the_event_and_says_so(caplog):
    hold = threading.Event()
    k = kube_with(lambda body: hold.wait(10))
    k.post_events_in_background(capacity=1)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            k.event(SERVER, "Warning", "NotifyFailed", "x")
    hold.set()
    assert "event NotifyFailed on odin dropped: 1 waiting to be posted" in caplog.text


def test_an_event_that_cannot_be_posted_is_logged_and_the_poster_goes_on(caplog):
    seen = []

    def create(body):
        seen.append(body["reason"])
        if body["reason"] == "Bad":
            raise RuntimeError("the namespace is terminating")
    k = kube_with(create)
    k.event(SERVER, "Normal", "Bad", "x")  # posted now without a background poster
    k.event(SERVER, "Normal", "Good", "x")
    assert seen == ["Bad", "Good"] and "could not post event Bad on odin: RuntimeError" in caplog.text
