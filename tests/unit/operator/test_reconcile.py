"""The GameServer reconcile driven through an in-memory API (fake_kube.FakeKube): what it
writes, in what order, and what it leaves when the API server refuses a child."""
import pytest

from fake_kube import FakeKube, api_error
from fixtures import game, gameserver

from peon.operator.cache import Cache
from peon.operator.controller import Controller
from peon.operator.namespaces import Scope
from peon.operator.games import GameReconciler


@pytest.fixture
def world():
    kube = FakeKube()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    g = game()
    g["metadata"]["generation"] = 1
    c.cache.put(c.cache.games, "valheim", g, False)
    gs = gameserver(network={"type": "NodePort"})
    kube.objects[("GameServer", "games", "odin")] = gs
    c.cache.put(c.cache.gameservers, ("games", "odin"), gs, False)
    return kube, c


def child_writes(kube):
    return [(v, k) for v, k, _ in kube.writes() if k not in ("GameServer", "Event")]


def test_a_first_build_makes_the_claim_last_and_tries_nothing_twice(world):
    kube, c = world
    again = c.reconcile(("GameServer", "games", "odin"))
    made = [k for v, k in child_writes(kube) if v == "apply"]
    # What the operator may delete again comes first; the world's claim, which it never
    # deletes, last: a refusal anywhere can be taken back whole. Each create is its own try.
    assert made == ["Secret", "Service", "Deployment", "PersistentVolumeClaim"]
    # Pending (no pod yet) is held back a moment: a server up within it shows Running first.
    assert "status" not in kube.objects[("GameServer", "games", "odin")]
    assert 0 < again <= 2.0


def test_a_phase_on_its_way_is_written_once_it_has_lasted(world, monkeypatch):
    import peon.operator.controller as ctl
    kube, c = world
    clock = [1000.0]
    monkeypatch.setattr(ctl.time, "monotonic", lambda: clock[0])
    c.reconcile(("GameServer", "games", "odin"))
    clock[0] += 2.5  # still no pod: Pending has lasted, and is said
    c.reconcile(("GameServer", "games", "odin"))
    status = kube.objects[("GameServer", "games", "odin")]["status"]
    assert status["phase"] == "Pending"
    assert next(x for x in status["conditions"] if x["type"] == "Valid")["status"] == "True"
    assert [e for e in kube.events if e[1] == "Pending"] == []  # no Event repeats the phase


def left(kube):
    return sorted(k for k, _, _ in kube.objects if k not in ("GameServer", "Game"))


def test_a_refused_first_build_leaves_nothing_and_says_why(world):
    kube, c = world
    kube.refuse["Service"] = api_error(422, 'Service "odin" is invalid: spec.ports[0].nodePort: '
                                            "Invalid value: 30000: provided port is already allocated")
    c.reconcile(("GameServer", "games", "odin"))
    assert left(kube) == []
    # The Secret made, the Service refused, the Secret taken back.
    assert child_writes(kube) == [("apply", "Secret"), ("apply", "Service"), ("delete", "Secret")]
    gs = kube.objects[("GameServer", "games", "odin")]
    valid = next(x for x in gs["status"]["conditions"] if x["type"] == "Valid")
    assert valid["reason"] == "Rejected" and "already allocated" in valid["message"]
    assert ("Warning", "Rejected", valid["message"]) in kube.events


@pytest.mark.parametrize("kind", ["Secret", "Service", "Deployment", "PersistentVolumeClaim"])
def test_a_refusal_of_any_child_of_a_first_build_leaves_nothing(world, kind):
    kube, c = world
    kube.refuse[kind] = api_error(403, f'{kind.lower()}s "odin" is forbidden: exceeded quota')
    c.reconcile(("GameServer", "games", "odin"))
    assert left(kube) == []
    valid = next(x for x in kube.objects[("GameServer", "games", "odin")]["status"]["conditions"]
                 if x["type"] == "Valid")
    assert valid["reason"] == "Rejected" and "exceeded quota" in valid["message"]
    # Said once: the next look (nothing changed) neither builds nor takes back again.
    c.cache.put(c.cache.gameservers, ("games", "odin"), kube.objects[("GameServer", "games", "odin")],
                False)
    kube.calls.clear()
    c.reconcile(("GameServer", "games", "odin"))
    assert [k for v, k in child_writes(kube) if v == "delete"] == []


def test_a_take_back_cut_short_is_finished_by_the_retry(world):
    kube, c = world
    kube.refuse["PersistentVolumeClaim"] = api_error(403, "exceeded quota")
    real_delete = kube.delete
    calls = []

    def flaky_delete(kind, ns, name, propagation="Background"):
        calls.append(kind)
        if len(calls) == 2:
            raise api_error(503, "the server is shutting down")
        return real_delete(kind, ns, name, propagation)
    kube.delete = flaky_delete
    with pytest.raises(Exception):
        c.reconcile(("GameServer", "games", "odin"))
    assert left(kube) != []  # cut short: some of it still stands
    c.reconcile(("GameServer", "games", "odin"))  # the worker's retry
    assert left(kube) == []


def test_a_server_whose_claim_exists_is_not_taken_back(world):
    kube, c = world
    c.reconcile(("GameServer", "games", "odin"))
    c.cache.put(c.cache.gameservers, ("games", "odin"), kube.objects[("GameServer", "games", "odin")],
                False)
    # A later change the API server refuses (a node port taken) changes nothing made before.
    kube.objects[("GameServer", "games", "odin")]["spec"]["network"]["nodePorts"] = {"game": 30000}
    kube.objects[("GameServer", "games", "odin")]["metadata"]["generation"] = 2
    c.cache.put(c.cache.gameservers, ("games", "odin"), kube.objects[("GameServer", "games", "odin")],
                False)
    kube.refuse["Service"] = api_error(422, "provided port is already allocated")
    kube.calls.clear()
    c.reconcile(("GameServer", "games", "odin"))
    assert [k for v, k in child_writes(kube) if v == "delete"] == []
    assert left(kube) == ["Deployment", "PersistentVolumeClaim", "Secret", "Service"]


def test_a_converged_server_is_not_tried_again(world):
    kube, c = world
    c.reconcile(("GameServer", "games", "odin"))
    c.cache.put(c.cache.gameservers, ("games", "odin"), kube.objects[("GameServer", "games", "odin")],
                False)
    kube.calls.clear()
    c.reconcile(("GameServer", "games", "odin"))
    assert [x for x in kube.calls if x[0] != "get"] == []


def test_the_game_reconciler_writes_once_and_only_for_games_it_serves(world):
    kube, c = world
    g = c.cache.games["valheim"]
    kube.objects[("Game", None, "valheim")] = g
    alone = Cache()
    alone.put(alone.games, "valheim", g, False)
    lonely = GameReconciler(kube, alone, whole_cluster=False)
    lonely.reconcile("valheim")  # a namespaced operator none of whose servers use it
    assert kube.writes() == []
    r = GameReconciler(kube, c.cache, whole_cluster=False)
    r.reconcile("valheim")
    r.reconcile("valheim")  # nothing changed: nothing written
    assert kube.writes() == [("status", "Game", "valheim")]
    assert kube.objects[("Game", None, "valheim")]["status"]["conditions"][0]["status"] == "True"


def test_a_start_looks_at_every_server_once_though_the_watches_bring_no_news():
    kube = FakeKube()
    g = game()
    kube.objects[("Game", None, "valheim")] = g
    kube.objects[("GameServer", "games", "odin")] = gameserver()
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    c.prime(Scope())
    assert {("GameServer", "games", "odin"), ("Game", "", "valheim")} <= c.queue._pending
    # The watches' first events repeat what was listed: no news, nothing more to queue.
    assert not c.cache.put(c.cache.gameservers, ("games", "odin"), gameserver(), False)


def test_a_claim_bound_after_it_was_made_is_not_applied_again(world):
    kube, c = world
    c.reconcile(("GameServer", "games", "odin"))
    c.cache.put(c.cache.gameservers, ("games", "odin"), kube.objects[("GameServer", "games", "odin")],
                False)
    key = ("PersistentVolumeClaim", "games", "odin-data")
    bound = {**kube.objects[key], "status": {"phase": "Bound"}}
    bound["metadata"] = {**bound["metadata"], "resourceVersion": "9999",
                         "annotations": {**bound["metadata"]["annotations"],
                                         "pv.kubernetes.io/bind-completed": "yes"}}
    bound["spec"] = {**bound["spec"], "volumeName": "pv-odin"}
    c.cache.put(c.cache.children, key, bound, False)
    kube.calls.clear()
    c.reconcile(("GameServer", "games", "odin"))
    assert [x for x in kube.calls if x[0] != "get"] == []


def test_a_server_whose_namespace_is_gone_is_forgotten_not_retried(world):
    """A watch of a namespace pattern ends with its namespace and may not tell that the
    servers in it went: the first reconcile that meets the missing namespace forgets them."""
    import asyncio
    import json

    from kubernetes.client.rest import ApiException

    kube, c = world
    gone = ApiException(status=404, reason="Not Found")
    gone.body = json.dumps({"kind": "Status", "code": 404, "message": 'namespaces "games" not found',
                            "details": {"name": "games", "kind": "namespaces"}})

    def reconcile(key):
        raise gone
    c.reconcile = reconcile
    c.phases[("GameServer", "games", "odin")] = "Running"

    async def one_look():
        c.queue.add(("GameServer", "games", "odin"))
        worker = asyncio.create_task(c._worker())
        while not c.queue.idle():
            await asyncio.sleep(0.01)
        worker.cancel()
        return dict(c.queue._timers)
    assert asyncio.run(one_look()) == {}  # no retry
    assert ("games", "odin") not in c.cache.gameservers
    assert ("GameServer", "games", "odin") not in c.phases
    # A 404 for the object itself is not its namespace's.
    other = ApiException(status=404, reason="Not Found")
    other.body = json.dumps({"kind": "Status", "code": 404,
                             "details": {"name": "odin", "kind": "gameservers"}})
    from peon.operator.controller import _namespace_gone
    assert _namespace_gone(gone) and not _namespace_gone(other)


def judged(kube, c, gs):
    kube.objects[("GameServer", "games", "odin")] = gs
    c.cache.put(c.cache.gameservers, ("games", "odin"), gs, False)
    c.reconcile(("GameServer", "games", "odin"))
    status = kube.objects[("GameServer", "games", "odin")].get("status") or {}
    return next((x for x in status.get("conditions") or [] if x["type"] == "Valid"), {})


def test_a_service_account_token_never_goes_into_a_pod(world):
    kube, c = world
    kube.objects[("Secret", "games", "builder-token")] = {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "builder-token", "namespace": "games", "resourceVersion": "1"},
        "data": {"TOKEN": "c2VjcmV0"}}
    valid = judged(kube, c, gameserver(settings=[
        {"type": "env", "name": "e", "secretRef": {"name": "builder-token"}}]))
    assert (valid["status"], valid["reason"]) == ("False", "SecretNotAllowed")
    assert "service account's token" in valid["message"] and "c2VjcmV0" not in valid["message"]
    assert ("Deployment", "games", "odin") not in kube.objects
    store = {"s3": {"endpoint": "https://s3.example", "bucket": "b"},
             "secretRef": {"name": "builder-token"}}
    valid = judged(kube, c, gameserver(backup={"store": store}))
    assert valid["reason"] == "SecretNotAllowed" and "spec.backup.store.secretRef" in valid["message"]


def test_an_existing_claim_is_used_only_when_labelled_for_its_server(world):
    kube, c = world
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "old-world", "namespace": "games", "resourceVersion": "1",
                          "labels": {"app.kubernetes.io/managed-by": "peon-operator",
                                     "peon.dev/gameserver": "someone-else"}},
             "spec": {"accessModes": ["ReadWriteOnce"]}}
    c.cache.put(c.cache.children, ("PersistentVolumeClaim", "games", "old-world"), claim, False)
    gs = gameserver(storage={"existingClaim": "old-world"})
    valid = judged(kube, c, gs)
    assert (valid["status"], valid["reason"]) == ("False", "ClaimNotAllowed")
    assert "peon.dev/gameserver=odin" in valid["message"]
    assert ("Deployment", "games", "odin") not in kube.objects
    claim["metadata"]["labels"]["peon.dev/gameserver"] = "odin"
    claim["metadata"]["resourceVersion"] = "2"
    c.cache.put(c.cache.children, ("PersistentVolumeClaim", "games", "old-world"), claim, False)
    judged(kube, c, gs)
    assert ("Deployment", "games", "odin") in kube.objects
