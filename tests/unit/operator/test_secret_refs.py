"""The users' Secrets that servers name: read by name, read again in turn, never listed."""
from fake_kube import FakeKube
from fixtures import gameserver, queued

from peon.operator.controller import Controller
from peon.operator.namespaces import Scope
from peon.operator.secret_refs import SecretRefresher, refresh_plan


def secret(name, rv, **data):
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "games", "resourceVersion": rv},
            "data": data}


def setup():
    kube = FakeKube()
    controller = Controller(kube, workers=1, job_image="peon.invalid/job:1")
    gs = gameserver(settings=[{"type": "env", "name": "env", "secretRef": {"name": "creds"}}],
                    backup={"store": {"s3": {"endpoint": "https://s3.example", "bucket": "b"},
                                      "secretRef": {"name": "store"}}})
    controller.cache.put(controller.cache.gameservers, ("games", "odin"), gs, False)
    kube.objects[("Secret", "games", "creds")] = secret("creds", "1", SERVER_PASS="eA==")
    kube.objects[("Secret", "games", "store")] = secret("store", "1", RESTIC_PASSWORD="eA==")
    kube.objects[("Secret", "games", "token")] = secret("token", "1", token="c2VjcmV0")
    refresher = SecretRefresher(controller.cache.named_secrets, controller.read_secret,
                                controller.secret_changed, controller.cache.forget_secrets,
                                interval=0.001, rate=1e6)
    return kube, controller, refresher


def test_the_plan_reads_each_named_secret_once_a_round_at_a_bounded_rate():
    keys, pause = refresh_plan([("a", "x"), ("a", "y"), ("a", "x")], interval=30, rate=20)
    assert keys == [("a", "x"), ("a", "y")] and pause == 15
    keys, pause = refresh_plan([("a", str(i)) for i in range(6000)], interval=30, rate=20)
    assert len(keys) == 6000 and pause == 0.05  # 5 minutes a round, never more than 20 a second
    assert refresh_plan([], interval=30, rate=20) == ([], 30)


def test_only_the_secrets_servers_name_are_read_and_a_change_rolls_their_servers():
    kube, controller, refresher = setup()
    assert sorted(controller.cache.named_secrets()) == [("games", "creds"), ("games", "store")]
    refresher.round()
    read = {name for verb, kind, name in kube.calls if verb == "get" and kind == "Secret"}
    assert read == {"creds", "store"}  # never `token`, which no server names
    assert controller.cache.secrets[("games", "creds")].keys == {"SERVER_PASS"}
    assert queued(controller) == [("GameServer", "games", "odin")]  # a view is news once
    refresher.round()
    assert queued(controller) == []  # unchanged: nothing to do
    kube.objects[("Secret", "games", "creds")] = secret("creds", "2", SERVER_PASS="eQ==")
    refresher.round()
    assert queued(controller) == [("GameServer", "games", "odin")]
    del kube.objects[("Secret", "games", "creds")]
    refresher.round()
    assert ("games", "creds") not in controller.cache.secrets
    assert queued(controller) == [("GameServer", "games", "odin")]


def test_a_secret_no_server_names_any_more_is_forgotten():
    kube, controller, refresher = setup()
    refresher.round()
    gs = controller.cache.gameservers[("games", "odin")]
    controller.cache.put(controller.cache.gameservers, ("games", "odin"), gs, True)
    refresher.round()
    assert controller.cache.secrets == {}


def test_a_failed_read_is_logged_and_the_round_goes_on(caplog):
    kube, controller, refresher = setup()

    def broken(kind, ns, name, resource_version=None):
        if name == "creds":
            raise RuntimeError("the API server is away")
        return FakeKube.get(kube, kind, ns, name, resource_version)
    kube.get = broken
    refresher.round()
    assert ("games", "store") in controller.cache.secrets
    assert "reading Secret games/creds failed" in caplog.text


def test_the_prime_lists_no_secret_and_no_kind_the_streams_list():
    """The streams' first lists bring the operator's own Secrets (and the other children and
    pods); the prime lists kopf's kinds only, and never a user's Secret."""
    from peon.operator import kinds
    kube, controller, _ = setup()
    controller.prime(Scope())
    assert {kind for kind, _, _ in kube.lists} == {"Game", "GameServer", "GameServerBackup",
                                                  "GameServerRestore", "Job"}
    assert not {kind for kind, _, _ in kube.lists} & {w.kind for w in kinds.watched_by(kinds.STREAM)}
    assert controller.cache.secrets == {}  # not even a view of `token`
