"""The cache and its indexes: every question a reconcile asks, answered from an index that
follows puts, moves and deletes."""
from peon.operator.cache import Cache, at_least_as_new


def test_at_least_as_new_compares_resource_versions():
    a = {"metadata": {"resourceVersion": "10"}}
    assert at_least_as_new(a, {"metadata": {"resourceVersion": "11"}})
    assert not at_least_as_new(a, {"metadata": {"resourceVersion": "9"}})
    assert at_least_as_new(None, a)


def pod(name, gs, ns="n", rv="1", **labels):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                         "labels": {"peon.dev/gameserver": gs, **labels}}}


def test_pods_of_a_server_follow_puts_and_deletes_and_leave_out_run_pods():
    c = Cache()
    c.put(c.pods, ("n", "a-1"), pod("a-1", "a"), False)
    c.put(c.pods, ("n", "a-backup"), pod("a-backup", "a", **{"peon.dev/backup": "b1"}), False)
    c.put(c.pods, ("m", "a-1"), pod("a-1", "a", ns="m"), False)
    assert [p["metadata"]["name"] for p in c.pods_of("n", "a")] == ["a-1"]
    c.put(c.pods, ("n", "a-1"), pod("a-1", "a"), True)
    assert c.pods_of("n", "a") == [] and len(c.pods_of("m", "a")) == 1


def test_an_older_version_never_replaces_a_newer_one_nor_its_index_entries():
    c = Cache()
    c.put(c.pods, ("n", "p"), pod("p", "a", rv="5"), False)
    c.put(c.pods, ("n", "p"), pod("p", "b", rv="4"), False)  # a stale event
    assert c.pods_of("n", "b") == [] and len(c.pods_of("n", "a")) == 1
    c.put(c.pods, ("n", "p"), pod("p", "b", rv="6"), False)  # relabelled: it moves
    assert c.pods_of("n", "a") == [] and len(c.pods_of("n", "b")) == 1


def gs(name, game="valheim", refs=(), ns="n", rv="1"):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
            "spec": {"gameUid": game, "settings": [{"type": "env", "name": r, "secretRef": {"name": r}}
                                                   for r in refs]}}


def test_servers_by_game_alias_and_by_secret():
    c = Cache()
    c.put(c.games, "valheim", {"metadata": {"name": "valheim", "resourceVersion": "1"},
                               "spec": {"aliases": ["valhiem"]}}, False)
    c.put(c.gameservers, ("n", "a"), gs("a", refs=["pw"]), False)
    c.put(c.gameservers, ("n", "b"), gs("b", game="valhiem"), False)
    c.put(c.gameservers, ("m", "c"), gs("c", game="factorio", refs=["pw"], ns="m"), False)
    assert c.game("valhiem")["metadata"]["name"] == "valheim" and c.game("nope") is None
    assert sorted(c.gameservers_of_game(c.games["valheim"])) == [("GameServer", "n", "a"),
                                                               ("GameServer", "n", "b")]
    assert c.gameservers_referencing_secret("n", "pw") == [("GameServer", "n", "a")]
    c.put(c.gameservers, ("n", "a"), gs("a", rv="2"), False)  # the reference removed
    assert c.gameservers_referencing_secret("n", "pw") == []
    c.put(c.gameservers, ("n", "b"), gs("b"), True)
    assert c.gameservers_of_game(c.games["valheim"]) == [("GameServer", "n", "a")]


def test_runs_of_a_server():
    c = Cache()
    run = lambda n, g: {"metadata": {"name": n, "namespace": "n", "resourceVersion": "1"},
                        "spec": {"gameServer": g}}
    c.put(c.backups, ("n", "b1"), run("b1", "a"), False)
    c.put(c.backups, ("n", "b2"), run("b2", "x"), False)
    c.put(c.restores, ("n", "r1"), run("r1", "a"), False)
    assert [r["metadata"]["name"] for r in c.runs_of(c.backups, "n", "a")] == ["b1"]
    assert [r["metadata"]["name"] for r in c.runs_of(c.restores, "n", "a")] == ["r1"]


def test_a_users_secret_is_kept_as_keys_and_a_digest_never_its_values():
    c = Cache()
    c.put_secret("n", {"metadata": {"name": "pw", "resourceVersion": "3"},
                       "data": {"SERVER_PASS": "aHVudGVyMjI="}}, False)
    view = c.secrets[("n", "pw")]
    assert view.keys == frozenset({"SERVER_PASS"}) and "aHVudGVyMjI=" not in repr(view)


def test_cached_objects_carry_no_managed_fields_and_the_watchers_copy_is_untouched():
    c = Cache()
    body = pod("a-1", "a")
    body["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
    c.put(c.pods, ("n", "a-1"), body, False)
    assert "managedFields" not in c.pods[("n", "a-1")]["metadata"]
    assert "managedFields" in body["metadata"]  # kopf's body is not mutated
    assert c.pods_of("n", "a")[0]["metadata"]["name"] == "a-1"


def test_pods_and_jobs_are_kept_as_the_reconcile_reads_them():
    """A pod's spec (and a Job's template) is most of its size and never read from the cache."""
    from peon.shared import backup as bk, status as st
    from peon.operator.cache import Cache
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "odin-1", "namespace": "games", "resourceVersion": "5",
                        "labels": {"peon.dev/gameserver": "odin"}, "annotations": {"big": "x" * 999},
                        "managedFields": [{"manager": "kubelet"}]},
           "spec": {"nodeName": "node-1", "containers": [{"name": "server", "env": [{"name": "A"}] * 50}],
                    "volumes": [{"name": "data"}] * 10},
           "status": {"phase": "Running", "hostIP": "10.0.0.7", "podIP": "10.244.0.9",
                      "conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"name": "server", "ready": True,
                                             "state": {"running": {"startedAt": "t"}}}]}}
    c = Cache()
    c.put(c.pods, ("games", "odin-1"), pod, False)
    kept = c.pods_of("games", "odin")[0]
    assert "containers" not in kept["spec"] and "annotations" not in kept["metadata"]
    assert st.server_phase(True, None, [kept]) == st.server_phase(True, None, [pod])
    assert bk.hook_pod([kept]) == "odin-1"
    assert st.endpoints(None, [kept], True, [{"name": "game", "containerPort": 2456}]) == \
        st.endpoints(None, [pod], True, [{"name": "game", "containerPort": 2456}])
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "b1-backup", "resourceVersion": "3"},
           "spec": {"template": {"spec": {"containers": [{"name": "archive"}]}}},
           "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    c.put(c.jobs, ("games", "b1-backup"), job, False)
    assert "spec" not in c.jobs[("games", "b1-backup")]
    assert bk.job_outcome(c.jobs[("games", "b1-backup")]) == bk.job_outcome(job)


def test_a_put_says_whether_it_was_news():
    c = Cache()
    assert c.put(c.pods, ("n", "p"), pod("p", "a", rv="5"), False)  # new
    # The watch event of the operator's own write repeats what the write put: not news, so
    # no reconcile is queued for it.
    assert not c.put(c.pods, ("n", "p"), pod("p", "a", rv="5"), False)
    assert not c.put(c.pods, ("n", "p"), pod("p", "a", rv="4"), False)  # stale
    # A newer version that says nothing new for a server (a field not kept) is no news either.
    assert not c.put(c.pods, ("n", "p"), {**pod("p", "a", rv="6"), "status": {"qosClass": "x"}},
                     False)
    assert c.put(c.pods, ("n", "p"), {**pod("p", "a", rv="7"), "status": {"phase": "Running"}},
                 False)  # newer, and news
    assert c.put(c.pods, ("n", "p"), pod("p", "a", rv="8"), True)  # gone
    assert not c.put(c.pods, ("n", "p"), pod("p", "a", rv="8"), True)  # gone already


def test_a_users_secret_is_news_when_its_data_changes_or_it_goes():
    c = Cache()
    secret = {"metadata": {"name": "pw", "namespace": "n", "resourceVersion": "1"},
              "data": {"ADMIN": "eA=="}}
    assert c.put_secret("n", secret, False)
    assert not c.put_secret("n", secret, False)
    assert c.put_secret("n", {**secret, "metadata": {**secret["metadata"], "resourceVersion": "2"},
                              "data": {"ADMIN": "eQ=="}}, False)
    # An older version (a reconcile's read racing the Secrets' stream) never replaces it.
    assert not c.put_secret("n", secret, False)
    assert c.secrets[("n", "pw")].resource_version == "2"
    assert c.put_secret("n", secret, True)
    assert not c.put_secret("n", secret, True)


def claim(rv, size="10Gi", **extra_meta):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "odin-data", "namespace": "n", "resourceVersion": rv,
                         "labels": {"peon.dev/gameserver": "odin"},
                         "annotations": {"peon.dev/applied-hash": "abc"}, **extra_meta},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


def test_a_claim_being_bound_is_no_news_and_its_size_is():
    c = Cache()
    key = ("PersistentVolumeClaim", "n", "odin-data")
    assert c.put(c.children, key, claim("1"), False)
    bound = claim("2", finalizers=["kubernetes.io/pvc-protection"])
    bound["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"
    bound["spec"]["volumeName"] = "pv-1"
    bound["status"] = {"phase": "Bound", "capacity": {"storage": "10Gi"}}
    assert not c.put(c.children, key, bound, False)
    kept = c.children[key]
    assert kept["metadata"]["resourceVersion"] == "2"  # the newest, as the reconcile reads it
    assert kept["metadata"]["annotations"] == {"peon.dev/applied-hash": "abc"}
    assert kept["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert c.put(c.children, key, claim("3", size="20Gi"), False)


def deployment(rv, ready=0, conditions=()):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "odin", "namespace": "n", "resourceVersion": rv, "generation": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "server",
                                                                           "image": "x:1"}]}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "readyReplicas": ready, "conditions": list(conditions)}}


def test_a_deployments_conditions_alone_are_no_news_its_ready_replicas_are():
    c = Cache()
    key = ("Deployment", "n", "odin")
    assert c.put(c.children, key, deployment("1"), False)
    progressing = [{"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-29T10:00:00Z"}]
    assert not c.put(c.children, key, deployment("2", conditions=progressing), False)
    assert c.put(c.children, key, deployment("3", ready=1, conditions=progressing), False)
    kept = c.children[key]
    assert kept["spec"]["template"]["spec"]["containers"][0]["image"] == "x:1"
    assert kept["status"] == {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                              "readyReplicas": 1}


def test_a_pods_seed_step_and_how_it_ended_are_kept_and_other_init_steps_are_not():
    from peon.operator.cache import _slim_pod
    end = {"exitCode": 1, "message": '{"error": "x"}', "finishedAt": "2026-12-06T12:00:00Z",
           "reason": "Error", "startedAt": "2026-12-06T11:59:00Z", "containerID": "c://1"}
    pod = {"metadata": {"name": "p", "namespace": "games"}, "spec": {"nodeName": "n"},
           "status": {"phase": "Pending", "initContainerStatuses": [
               {"name": "seed", "image": "i", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": end}},
               {"name": "volume-owner", "state": {"waiting": {}}}]}}
    assert _slim_pod(pod)["status"]["initContainerStatuses"] == [
        {"name": "seed", "lastState": {"terminated": {
            "exitCode": 1, "message": '{"error": "x"}', "finishedAt": "2026-12-06T12:00:00Z"}}}]
    del pod["status"]["initContainerStatuses"]
    assert "initContainerStatuses" not in _slim_pod(pod)["status"]


def test_cached_objects_share_their_keys_and_short_strings():
    """Two Deployments decoded apart hold one copy of each key and short value once cached."""
    import json
    from peon.operator.cache import Cache
    text = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "NAME", "namespace": "games", "resourceVersion": "1"},
                       "spec": {"template": {"spec": {"containers": [
                           {"name": "game", "terminationMessagePath": "/dev/termination-log",
                            "args": ["x" * 100]}]}}}})
    cache = Cache()
    for name in ("odin", "thor"):
        cache.put(cache.children, ("Deployment", "games", name),
                  json.loads(text.replace("NAME", name)), False)
    a, b = (cache.children[("Deployment", "games", n)] for n in ("odin", "thor"))
    ca, cb = (d["spec"]["template"]["spec"]["containers"][0] for d in (a, b))
    key_a = next(k for k in ca if k == "terminationMessagePath")
    key_b = next(k for k in cb if k == "terminationMessagePath")
    assert key_a is key_b
    assert ca["terminationMessagePath"] is cb["terminationMessagePath"]
    assert a["metadata"]["name"] == "odin" and b["metadata"]["name"] == "thor"
    assert ca["args"] == cb["args"] == ["x" * 100]  # long strings are kept as they came
