"""One reading of --namespace for the prime, the streams and kopf."""
from fake_kube import FakeKube
from fixtures import gameserver

from peon.operator.controller import Controller
from peon.operator.namespaces import Scope, is_pattern


def test_exact_names_are_listed_each_and_patterns_cluster_wide():
    assert Scope().list_scopes() == [None] and Scope().wants("anything")
    assert Scope(("a", "b")).list_scopes() == ["a", "b"] and not Scope(("a", "b")).patterned
    assert Scope(("games-*", "!games-test")).list_scopes() == [None]
    assert is_pattern("!x") and is_pattern("g?") and not is_pattern("games")


def test_an_exclusion_is_kept_out_whatever_else_matches():
    served = Scope(("games-*", "!games-test"))
    assert served.wants("games-eu") and not served.wants("games-test") and not served.wants("other")
    assert Scope(("!kube-system",)).wants("games") and not Scope(("!kube-system",)).wants("kube-system")


def test_the_prime_caches_and_queues_nothing_of_an_excluded_namespace():
    """It used to read `!t-skip` as a pattern that matches nothing, and `t-*` matched t-skip:
    an excluded namespace's servers were cached and queued at every start."""
    kube = FakeKube()
    for ns in ("t-keep", "t-skip"):
        gs = gameserver()
        gs["metadata"]["namespace"] = ns
        kube.objects[("GameServer", ns, "odin")] = gs
    c = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    c.prime(Scope(("t-*", "!t-skip")))
    assert list(c.cache.gameservers) == [("t-keep", "odin")]
