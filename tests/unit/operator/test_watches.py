"""The watch streams (watches.Reflector) against a scripted API: what they report, from which
version they resume, what a new list reports deleted, and that a failure anywhere leaves the
stream going. Kube.watch itself is read against a scripted HTTP response. The streams against
the real API server are exercised by every integration test."""
import pytest
from kubernetes.client.rest import ApiException

from peon.operator import kinds, watches
from peon.shared.kube import Kube, ListExpired
from peon.operator.namespaces import Scope
from peon.operator.watches import Reflector, Stream, streams_for


def cm(name, rv, ns="games"):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                         "labels": {"peon.dev/gameserver": name}}, "data": {"rv": rv}}


class Paged(list):
    """A list's scripted pages, each (objects, version), or an exception to raise there."""


class ScriptedKube:
    """Answers each list and each watch with the next of its scripted answers (a list of
    objects and its version, or Paged pages; a list of events, possibly ending in an exception
    to raise)."""

    def __init__(self, lists, watches_):
        self.lists, self.watches = list(lists), list(watches_)
        self.watched_from: list[str] = []
        self.on_page = lambda: None  # called as each page is asked for

    def pages(self, kind, namespace=None, selector=None):
        answer = self.lists.pop(0)
        for page in answer if isinstance(answer, Paged) else [answer]:
            self.on_page()
            if isinstance(page, Exception):
                raise page
            yield page

    def watch(self, kind, namespace, selector, version, seconds):
        assert 300 <= seconds <= 600
        self.watched_from.append(version)
        answer = self.watches.pop(0)
        if isinstance(answer, Exception):
            raise answer
        for event in answer:
            if isinstance(event, Exception):
                raise event
            yield event


class Recorder:
    """An event function and a cache in one: what a stream told, and what it holds."""

    def __init__(self, fail_on=()):
        self.seen, self.held, self.fail_on = [], {}, set(fail_on)

    def __call__(self, type_, obj):
        name = obj["metadata"]["name"]
        self.seen.append((type_, name))
        if name in self.fail_on:
            raise KeyError("a handler's bug")
        key = (obj["metadata"]["namespace"], name)
        if type_ == "DELETED":
            self.held.pop(key, None)
        else:
            self.held[key] = obj


def reflector(kube, rec, stream=Stream("ConfigMap", "games", None)):
    """A reflector that stops once its scripted watches are spent (run() returns then)."""
    r = Reflector(kube, stream, rec, lambda: dict(rec.held))
    real_follow = r.follow

    def follow():
        if not kube.watches:
            r.stop()
            return 1
        return real_follow()
    r.follow = follow
    r.waits = []
    r.stopping.wait = r.waits.append  # backing off waits for nothing here, and is recorded
    return r


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(watches.random, "random", lambda: 0.5)


def test_a_stream_lists_then_resumes_each_watch_from_the_last_version_seen():
    kube = ScriptedKube(
        lists=[([cm("a", "10")], "12")],
        watches_=[[{"type": "MODIFIED", "object": cm("a", "13")},
                   {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}}],
                  [{"type": "ADDED", "object": cm("b", "21")}]])
    rec = Recorder()
    reflector(kube, rec).run()
    assert rec.seen == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]
    assert kube.watched_from == ["12", "20"]  # the bookmark's version, not the last object's


def test_a_list_reports_deleted_what_the_cache_holds_and_the_list_lacks():
    rec = Recorder()
    rec.held = {("games", "a"): cm("a", "3"),  # deleted while no watch saw it
                ("games", "late"): cm("late", "90"),  # written after the list was taken
                ("other", "x"): cm("x", "4", ns="other")}  # another stream's namespace
    kube = ScriptedKube(lists=[([cm("b", "11")], "50")], watches_=[])
    reflector(kube, rec).run()
    assert rec.seen == [("ADDED", "b"), ("DELETED", "a")]
    assert set(rec.held) == {("games", "b"), ("games", "late"), ("other", "x")}


def test_after_410_gone_in_the_stream_a_new_list_reports_what_went_meanwhile():
    kube = ScriptedKube(
        lists=[([cm("a", "10"), cm("b", "11")], "11"), ([cm("b", "30")], "31")],
        watches_=[[{"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                 "message": "too old resource version"}}],
                  []])
    rec = Recorder()
    reflector(kube, rec).run()
    assert rec.seen == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "b"), ("DELETED", "a")]
    assert kube.watched_from == ["11", "31"]


def test_a_list_goes_into_the_cache_page_by_page():
    rec = Recorder()
    kube = ScriptedKube(lists=[Paged([([cm("a", "10")], "12"), ([cm("b", "11")], "12")])],
                        watches_=[])
    held_when_asked = []
    kube.on_page = lambda: held_when_asked.append(sorted(n for _, n in rec.held))
    reflector(kube, rec).run()
    assert held_when_asked == [[], ["a"]]  # page one was in the cache before page two was asked
    assert set(rec.held) == {("games", "a"), ("games", "b")}


def test_a_list_whose_snapshot_expired_between_pages_is_made_again_from_the_start():
    rec = Recorder()
    rec.held = {("games", "c"): cm("c", "5")}
    # The first list saw c, then expired; c was deleted before the second list: the second
    # list's own keys decide what went, not the expired one's.
    kube = ScriptedKube(lists=[Paged([([cm("c", "5")], "12"), ListExpired("expired")]),
                               Paged([([cm("a", "10")], "40"), ([cm("b", "11")], "40")])],
                        watches_=[])
    r = reflector(kube, rec)
    r.run()
    assert rec.seen == [("ADDED", "c"), ("ADDED", "a"), ("ADDED", "b"), ("DELETED", "c")]
    assert r.version == "40" and r.waits == []  # listed again at once, and resumes from there


def test_a_watch_refused_with_410_lists_again_and_backs_off_if_it_repeats():
    kube = ScriptedKube(lists=[([cm("a", "10")], "10"), ([cm("a", "10")], "50"),
                               ([cm("a", "10")], "60")],
                        watches_=[ApiException(status=410, reason="Gone"),
                                  ApiException(status=410, reason="Gone"),
                                  [{"type": "MODIFIED", "object": cm("a", "61")}]])
    rec = Recorder()
    r = reflector(kube, rec)
    r.run()
    assert kube.watched_from == ["10", "50", "60"]
    assert r.waits == [2.0]  # the first 410 lists again at once; the second waits


def test_a_broken_stream_resumes_from_the_last_event_it_brought():
    kube = ScriptedKube(lists=[([], "5")],
                        watches_=[ApiException(status=500, reason="boom"),
                                  [{"type": "ADDED", "object": cm("a", "6")},
                                   ConnectionResetError("reset mid-stream")],
                                  [{"type": "ADDED", "object": cm("b", "7")}]])
    rec = Recorder()
    r = reflector(kube, rec)
    r.run()
    assert r.waits == [1.0, 2.0]  # doubling, from 1 s
    assert kube.watched_from == ["5", "5", "6"]
    assert rec.seen == [("ADDED", "a"), ("ADDED", "b")]


def test_a_failing_event_function_is_contained_to_its_event():
    kube = ScriptedKube(lists=[([cm("bad", "1"), cm("a", "2")], "2")],
                        watches_=[[{"type": "ADDED", "object": cm("bad2", "3")},
                                   {"type": "ADDED", "object": cm("b", "4")}]])
    rec = Recorder(fail_on={"bad", "bad2"})
    reflector(kube, rec).run()
    assert ("ADDED", "a") in rec.seen and ("ADDED", "b") in rec.seen
    assert kube.watched_from == ["2"]  # no list again, no replay


def test_a_watch_that_ends_at_once_with_nothing_is_backed_off():
    kube = ScriptedKube(lists=[([], "5")], watches_=[[], [], [{"type": "ADDED",
                                                                "object": cm("a", "6")}]])
    rec = Recorder()
    r = reflector(kube, rec)
    r.run()
    assert r.waits == [1.0, 2.0]


def test_namespace_patterns_watch_the_whole_cluster_and_keep_their_matches():
    [pod] = [s for s in streams_for(Scope(("games-*", "!games-test"))) if s.kind == "Pod"]
    assert pod.namespace is None and pod.selector == "peon.dev/gameserver"
    assert pod.wants(cm("x", "1", ns="games-eu")) and not pod.wants(cm("x", "1", ns="other"))
    assert not pod.wants(cm("x", "1", ns="games-test"))
    exact = [s for s in streams_for(Scope(("a", "b"))) if s.kind == "Deployment"]
    assert [s.namespace for s in exact] == ["a", "b"]
    assert exact[0].selector == "app.kubernetes.io/managed-by=peon-operator"
    assert exact[0].holds(("a", "x")) and not exact[0].holds(("b", "x"))
    assert {s.namespace for s in streams_for(Scope())} == {None}


@pytest.mark.parametrize("kind", sorted(w.kind for w in kinds.watched_by(kinds.STREAM)))
def test_every_streamed_kind_has_a_stream(kind):
    assert any(s.kind == kind for s in streams_for(Scope()))


class ScriptedResponse:
    def __init__(self, chunks):
        self.chunks, self.released, self.closed = chunks, False, False

    def stream(self, amt):
        yield from self.chunks

    def release_conn(self):
        self.released = True

    def close(self):
        self.closed = True


def scripted_kube(resp):
    kube = Kube.__new__(Kube)

    class Dynamic:
        def request(self, method, path, **kw):
            assert ("watch", "true") in kw["query_params"]
            return resp
    kube.dynamic = Dynamic()
    return kube


def test_kube_watch_parses_events_split_across_chunks_and_releases_the_connection():
    resp = ScriptedResponse([b'{"type":"ADDED","object":{"a":', b'1}}\n{"type":"BOOK',
                             b'MARK","object":{}}\n\n{"type":"DELETED","object":{"a":2}}\n'])
    events = list(scripted_kube(resp).watch("ConfigMap", "games", None, "5", 300))
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "DELETED"]
    assert resp.released and not resp.closed


def test_kube_watch_left_early_closes_the_connection_instead():
    resp = ScriptedResponse([b'{"type":"ADDED","object":{}}\n{"type":"ADDED","object":{}}\n'])
    stream = scripted_kube(resp).watch("ConfigMap", "games", None, "5", 300)
    next(stream)
    stream.close()
    assert resp.closed and not resp.released


def test_a_stream_is_synced_once_its_first_list_is_in_the_cache():
    rec = Recorder()
    kube = ScriptedKube(lists=[([cm("a", "11")], "12")], watches_=[])
    r = reflector(kube, rec)
    assert not r.synced.is_set()
    r.run()
    assert r.synced.is_set() and ("games", "a") in rec.held
    watches.wait_synced([r], say_every=0.01)  # returns: nothing left to wait for


def test_a_list_is_asked_for_in_pages_and_restarts_when_its_token_expired():
    from kubernetes.client.rest import ApiException
    from peon.shared.kube import Kube
    asked = []

    def call(method, url, query=()):
        q = dict(query)
        assert q["limit"] == "1"
        asked.append(q.get("continue"))
        if q.get("continue") == "t1" and asked.count("t1") == 1:
            raise ApiException(status=410)  # the snapshot is gone: from the start again
        if q.get("continue") == "t1":
            return {"items": [cm("b", "2")], "metadata": {"resourceVersion": "9"}}
        return {"items": [cm("a", "1")], "metadata": {"continue": "t1"}}
    k = Kube.__new__(Kube)
    k._call = call
    items, version = k._list("ConfigMap", "games", None, limit=1)
    assert [o["metadata"]["name"] for o in items] == ["a", "b"] and version == "9"
    assert asked == [None, "t1", None, "t1"]
    # Page by page, an expired token is the reader's to handle.
    asked.clear()
    pages = k.pages("ConfigMap", "games", None, limit=1)
    assert [o["metadata"]["name"] for o in next(pages)[0]] == ["a"]
    with pytest.raises(ListExpired):
        next(pages)
