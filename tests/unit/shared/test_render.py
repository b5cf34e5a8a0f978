import base64
import json

import pytest

from peon.shared.model import InvalidSpec, parse_game, parse_gameserver
from peon.shared.render import ReferencedSecrets, render
from fixtures import game, gameserver


def children(gs_obj, game_name="valheim", secrets=ReferencedSecrets(), running=None):
    out = render(parse_gameserver(gs_obj), parse_game(game(game_name)), secrets, running)
    return {o["kind"]: o for o in out}


def container(kids):
    return kids["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def env_of(kids):
    return {e["name"]: e["value"] for e in container(kids)["env"]}


def test_payload_becomes_secret_configmap_claim_deployment_service():
    kids = children(gameserver(settings=[
        {"type": "env", "name": "container environment",
         "content": {"SERVERNAME": "My-Valhiem-Server", "PASSWORD": "password123"}},
        {"type": "json", "name": "config.json", "content": {"somekey": "somevalue"}},
        {"type": "txt", "name": "textfile.txt", "content": "Some text\twith a tab\n"}]))
    assert set(kids) == {"Secret", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    secret = kids["Secret"]
    assert secret["metadata"]["name"] == "odin-env"
    assert base64.b64decode(secret["data"]["PASSWORD"]).decode() == "password123"
    cm = kids["ConfigMap"]["data"]
    assert json.loads(cm["config.json"]) == {"somekey": "somevalue"}
    assert cm["textfile.txt"] == "Some text\twith a tab\n"  # verbatim
    c = container(kids)
    assert c["envFrom"] == [{"secretRef": {"name": "odin-env"}}]
    # PEON's names reach the image's own variables through Kubernetes' $(NAME) expansion.
    assert env_of(kids)["SERVER_PASS"] == "$(PASSWORD)"
    assert env_of(kids)["SERVER_NAME"] == "$(SERVERNAME)"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/config"]["name"] == "data"
    assert mounts["/config/peon/config.json"]["subPath"] == "config.json"
    assert mounts["/config/peon/textfile.txt"]["readOnly"] is True


def test_passwords_never_leave_the_secret():
    kids = children(gameserver())
    dumped = json.dumps({k: v for k, v in kids.items() if k != "Secret"})
    assert "hunter22" not in dumped


def test_deployment_is_one_replica_recreate_and_zero_when_stopped():
    dep = children(gameserver())["Deployment"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert children(gameserver(state="Stopped"))["Deployment"]["spec"]["replicas"] == 0
    assert children(gameserver(state="Stopped"), running=True)["Deployment"]["spec"]["replicas"] == 1


def test_changed_setting_changes_the_pod_template_hash():
    def h(obj):
        return children(obj)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            "peon.dev/settings-hash"]
    a = gameserver(settings=[{"type": "env", "name": "e", "content": {"SERVER_PASS": "one-1"}}])
    b = gameserver(settings=[{"type": "env", "name": "e", "content": {"SERVER_PASS": "two-2"}}])
    assert h(a) != h(b)
    assert h(a) == h(a)


def test_referenced_secret_change_rolls_and_counts_for_required_vars():
    obj = gameserver(settings=[{"type": "env", "name": "pw", "secretRef": {"name": "valheim-pw"}}])
    with pytest.raises(InvalidSpec) as e:
        children(obj)
    assert e.value.reason == "MissingVariable" and "SERVER_PASS" in e.value.message
    s1 = ReferencedSecrets({"valheim-pw": frozenset({"SERVER_PASS"})}, {"valheim-pw": "aaa"})
    s2 = ReferencedSecrets({"valheim-pw": frozenset({"SERVER_PASS"})}, {"valheim-pw": "bbb"})
    k1, k2 = children(obj, secrets=s1), children(obj, secrets=s2)
    assert "Secret" not in k1  # no inline env: no Secret of ours
    assert container(k1)["envFrom"] == [{"secretRef": {"name": "valheim-pw"}}]
    ann = lambda k: k["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert ann(k1)["peon.dev/settings-hash"] != ann(k2)["peon.dev/settings-hash"]


def test_user_value_wins_over_game_default():
    kids = children(gameserver(settings=[{"type": "env", "name": "e", "content": {
        "SERVER_PASS": "hunter22", "WORLD_NAME": "Midgard"}}]))
    assert "WORLD_NAME" not in env_of(kids)  # envFrom supplies it; an env entry would win
    assert env_of(children(gameserver()))["WORLD_NAME"] == "Dedicated"


def test_service_ports_and_types():
    svc = children(gameserver())["Service"]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        ("game", 2456, "UDP"), ("query", 2457, "UDP"), ("crossplay", 2458, "UDP")]
    np = children(gameserver(network={"type": "NodePort", "nodePorts": {"game": 30456}}))["Service"]
    assert np["spec"]["ports"][0]["nodePort"] == 30456
    hp = children(gameserver(network={"type": "ClusterIP", "hostPorts": True}))
    assert container(hp)["ports"][0]["hostPort"] == 2456
    assert "externalTrafficPolicy" not in svc["spec"]  # Kubernetes' default, as before


def test_external_traffic_policy_keeps_players_addresses_where_a_node_port_exists():
    local = children(gameserver(network={"type": "LoadBalancer",
                                         "externalTrafficPolicy": "Local"}))["Service"]
    assert local["spec"]["externalTrafficPolicy"] == "Local"
    # A ClusterIP Service has no external traffic: the field would be refused by the API server.
    cip = children(gameserver(network={"type": "ClusterIP",
                                       "externalTrafficPolicy": "Local"}))["Service"]
    assert "externalTrafficPolicy" not in cip["spec"]


def test_claim_is_retained_unless_eradicate_is_asked():
    kept = children(gameserver())["PersistentVolumeClaim"]
    assert "ownerReferences" not in kept["metadata"]
    assert kept["spec"]["resources"]["requests"]["storage"] == "10Gi"
    gone = children(gameserver(storage={"retainOnDelete": False, "size": "20Gi"}))
    assert gone["PersistentVolumeClaim"]["metadata"]["ownerReferences"][0]["kind"] == "GameServer"
    assert gone["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_existing_claim_is_used_not_created():
    kids = children(gameserver(storage={"existingClaim": "old-world"}))
    assert "PersistentVolumeClaim" not in kids
    vols = kids["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert vols[0]["persistentVolumeClaim"]["claimName"] == "old-world"


def test_restart_annotation_reaches_the_pod_template():
    obj = gameserver()
    obj["metadata"]["annotations"] = {"peon.dev/restartedAt": "2026-11-28T10:00:00Z"}
    ann = children(obj)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert ann["peon.dev/restartedAt"] == "2026-11-28T10:00:00Z"


def test_image_override_and_labels():
    kids = children(gameserver(image="ghcr.io/lloesche/valheim-server:v2"))
    assert container(kids)["image"] == "ghcr.io/lloesche/valheim-server:v2"
    for k in kids.values():
        assert k["metadata"]["labels"]["peon.dev/gameserver"] == "odin"
        assert k["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "peon-operator"


def test_file_setting_path_override():
    kids = children(gameserver(settings=[
        {"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"}},
        {"type": "txt", "name": "adminlist.txt", "content": "76561198000000000\n",
         "path": "/config/adminlist.txt"}]))
    paths = [m["mountPath"] for m in container(kids)["volumeMounts"]]
    assert "/config/adminlist.txt" in paths


def test_game_args_may_use_variables():
    kids = children(gameserver(gameUid="terraria", settings=[]), game_name="terraria")
    assert container(kids)["args"][-1] == "$(WORLD_SIZE)"


# --- scheduling and the world's volume owner ---------------------------------------------------

def pod_spec(gs_obj, game_obj, helper_image=None):
    out = render(parse_gameserver(gs_obj), parse_game(game_obj), helper_image=helper_image)
    return next(o for o in out if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_scheduling_comes_from_the_game_and_each_field_of_the_server_replaces_its_default():
    g = game()
    g["spec"]["scheduling"] = {"nodeSelector": {"disk": "big"}, "priorityClassName": "games",
                               "tolerations": [{"key": "games", "operator": "Exists"}]}
    assert {k: v for k, v in pod_spec(gameserver(), g).items()
            if k in ("nodeSelector", "tolerations", "affinity", "priorityClassName")} == {
        "nodeSelector": {"disk": "big"}, "priorityClassName": "games",
        "tolerations": [{"key": "games", "operator": "Exists"}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    spec = pod_spec(gameserver(scheduling={"nodeSelector": {"kubernetes.io/hostname": "n1"},
                                           "tolerations": [], "affinity": affinity}), g)
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "n1"}
    assert "tolerations" not in spec  # an empty list given on the server replaces the Game's
    assert spec["affinity"] == affinity and spec["priorityClassName"] == "games"


def test_no_scheduling_leaves_the_pod_to_the_scheduler():
    spec = pod_spec(gameserver(), game())
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName"} & set(spec)


def test_a_game_running_as_a_user_gets_its_volume_chowned_first_by_the_helper_image():
    g = game()
    g["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1001, "fsGroup": 1001}
    spec = pod_spec(gameserver(), g, helper_image="peon.local/peon-operator:test")
    [init] = spec["initContainers"]
    assert init["image"] == "peon.local/peon-operator:test"
    assert init["command"] == ["chown", "1000:1001", "/peon/data"]
    assert init["volumeMounts"] == [{"name": "data", "mountPath": "/peon/data"}]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert spec["securityContext"]["fsGroup"] == 1001


@pytest.mark.parametrize("sc", [{}, {"fsGroup": 1000}, {"runAsUser": 0}])
def test_games_that_run_as_root_get_no_init_step(sc):
    g = game()
    g["spec"]["securityContext"] = sc
    assert "initContainers" not in pod_spec(gameserver(), g, helper_image="img:1")


# --- settings the API server (or the pod) would refuse: said before anything is written --------

@pytest.mark.parametrize("setting,reason,words", [
    ({"type": "txt", "name": "x.txt", "content": "x", "path": "/config"}, "InvalidSetting",
     "world's own folder"),
    ({"type": "txt", "name": "x.txt", "content": "x", "path": "/etc/passwd"}, "InvalidSetting",
     "system path"),
    ({"type": "txt", "name": "x.txt", "content": "x", "path": "/proc/self/x"}, "InvalidSetting",
     "system path"),
    ({"type": "txt", "name": "big.txt", "content": "x" * (1024 * 1024)}, "TooLarge",
     "at most 1048576"),
    ({"type": "env", "name": "e2", "content": {"..": "x"}}, "InvalidSetting",
     "not a valid environment variable name"),
    ({"type": "env", "name": "e2", "content": {"A" * 254: "x"}}, "InvalidSetting",
     "not a valid environment variable name"),
])
def test_settings_that_cannot_be_stored_or_mounted_are_invalid(setting, reason, words):
    with pytest.raises(InvalidSpec) as e:
        children(gameserver(settings=[
            {"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"}}, setting]))
    assert e.value.reason == reason and words in e.value.message


def test_a_large_env_value_counts_as_the_secret_stores_it():
    # The API server counts a Secret's raw bytes (not their base64): 900 KiB fits.
    children(gameserver(settings=[{"type": "env", "name": "e", "content": {
        "SERVER_PASS": "hunter22", "BLOB": "x" * 900 * 1024}}]))
    with pytest.raises(InvalidSpec) as e:
        children(gameserver(settings=[{"type": "env", "name": "e", "content": {
            "SERVER_PASS": "hunter22", "BLOB": "x" * 1024 * 1024}}]))
    assert e.value.reason == "TooLarge" and "Secret" in e.value.message


def test_paths_are_compared_normalised():
    with pytest.raises(InvalidSpec) as e:
        children(gameserver(settings=[
            {"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"}},
            {"type": "txt", "name": "x.txt", "content": "x", "path": "/etc//passwd"}]))
    assert "system path" in e.value.message


def test_two_settings_on_one_mount_path_are_invalid():
    with pytest.raises(InvalidSpec) as e:
        children(gameserver(settings=[
            {"type": "env", "name": "e", "content": {"SERVER_PASS": "hunter22"}},
            {"type": "txt", "name": "a.txt", "content": "a"},
            {"type": "txt", "name": "b.txt", "content": "b", "path": "/config/peon/a.txt"}]))
    assert "both write /config/peon/a.txt" in e.value.message


# --- a world seeded from the store ---------------------------------------------------------------

STORE = {"s3": {"endpoint": "http://10.89.0.1:8333", "bucket": "peon", "region": "eu-1"},
         "secretRef": {"name": "store-keys"}}


def test_a_seed_adds_an_init_step_that_restores_the_world_before_the_owner_step():
    g = game()
    g["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1001, "runAsNonRoot": True}
    spec = pod_spec(gameserver(backup={"store": {**STORE, "seed": "latest"}}), g,
                    helper_image="peon.local/peon-operator:test")
    seed, owner = spec["initContainers"]
    assert (seed["name"], owner["name"]) == ("seed", "volume-owner")
    assert seed["image"] == "peon.local/peon-operator:test"
    assert seed["command"] == ["peon", "store", "seed", "latest", "/data", "--host", "games/odin"]
    assert seed["env"] == [{"name": "RESTIC_REPOSITORY", "value": "s3:http://10.89.0.1:8333/peon/games/odin"},
                           {"name": "AWS_DEFAULT_REGION", "value": "eu-1"}]
    assert seed["envFrom"] == [{"secretRef": {"name": "store-keys", "optional": True}}]  # keys never in the spec
    sc = seed["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]}
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert {"name": "data", "mountPath": "/data"} in seed["volumeMounts"]
    assert {"name": "seed-tmp", "emptyDir": {}} in spec["volumes"]
    assert "automountServiceAccountToken" not in spec  # the game's own setting, untouched


def test_a_seed_by_id_and_no_seed():
    spec = pod_spec(gameserver(backup={"store": {**STORE, "seed": "1a2b3c4d"}}), game(),
                    helper_image="img:1")
    [seed] = spec["initContainers"]  # a game running as root: no owner step
    assert seed["command"][3] == "1a2b3c4d"
    assert "initContainers" not in pod_spec(gameserver(backup={"store": STORE}), game(),
                                            helper_image="img:1")


@pytest.mark.parametrize("bad", ["newest", "1a2b", "LATEST", "1A2B3C4D", "g" * 8])
def test_a_seed_that_is_neither_latest_nor_an_id_is_invalid(bad):
    with pytest.raises(InvalidSpec) as e:
        parse_gameserver(gameserver(backup={"store": {**STORE, "seed": bad}}))
    assert "store.seed" in e.value.message
