import pytest

from peon.shared.model import InvalidSpec, parse_game, parse_gameserver
from fixtures import game, gameserver


def test_defaults_follow_the_payload():
    gs = parse_gameserver(gameserver())
    assert gs.state == "Running"
    assert gs.storage.retain_on_delete is True
    assert gs.server_name == "Friends of Odin"
    assert gs.network.type == "LoadBalancer"


def test_server_name_defaults_to_object_name():
    obj = gameserver()
    del obj["spec"]["serverName"]
    assert parse_gameserver(obj).server_name == "odin"


@pytest.mark.parametrize("setting, words", [
    ({"type": "env", "name": "e", "content": {"PORT": 2456}}, "must be a string"),
    ({"type": "env", "name": "e", "content": {"1BAD": "x"}}, "not a valid environment variable"),
    ({"type": "env", "name": "e", "content": "A=B"}, "map of variable names"),
    ({"type": "json", "name": "c.json", "content": "text"}, "object or a list"),
    ({"type": "txt", "name": "t.txt", "content": {"a": 1}}, "must be a string"),
    ({"type": "txt", "name": "../etc/passwd", "content": "x"}, "plain file name"),
    ({"type": "txt", "name": "..", "content": "x"}, "plain file name"),
    ({"type": "yaml", "name": "x", "content": "x"}, "env, json or txt"),
])
def test_bad_settings_are_refused_with_a_clear_message(setting, words):
    with pytest.raises(InvalidSpec) as e:
        parse_gameserver(gameserver(settings=[setting]))
    assert e.value.reason == "InvalidSetting"
    assert words in e.value.message


def test_two_files_aimed_at_one_path_are_refused():
    settings = [{"type": "txt", "name": "a.txt", "content": "a", "path": "/etc/x"},
                {"type": "txt", "name": "b.txt", "content": "b", "path": "/etc/x"}]
    with pytest.raises(InvalidSpec, match="both write /etc/x"):
        parse_gameserver(gameserver(settings=settings))


def test_game_parses_ports_env_and_aliases():
    g = parse_game(game("valheim"))
    assert [(p.name, p.container_port, p.protocol) for p in g.ports] == [
        ("game", 2456, "UDP"), ("query", 2457, "UDP"), ("crossplay", 2458, "UDP")]
    assert "valhiem" in g.aliases
    assert next(e for e in g.env if e.name == "SERVER_PASS").aliases == ("PASSWORD",)


@pytest.mark.parametrize("resources,words", [
    ({"requests": {"cpu": "banana"}}, "'banana' is not a quantity"),
    ({"requests": {"cpu": "-1"}}, "'-1' is not a quantity"),
    ({"requests": {"gpus": "1"}}, "'gpus' is not a resource name"),
    ({"requests": {"memory": "8Gi"}, "limits": {"memory": "4Gi"}}, "memory request (8Gi) is above its limit (4Gi)"),
    ({"limit": {"cpu": "1"}}, "only requests and limits"),
    ({"requests": {"cpu": "1e999999999"}, "limits": {"cpu": "2"}}, "above its limit"),  # fast
    ({"requests": {"cpu": " 1"}}, "is not a quantity"),
    ({"requests": {"memory": "1e400"}, "limits": {"memory": "1Gi"}}, "above its limit"),
])
def test_resources_that_do_not_parse_are_invalid(resources, words):
    from fixtures import gameserver
    with pytest.raises(InvalidSpec) as e:
        parse_gameserver(gameserver(resources=resources))
    assert e.value.reason == "InvalidResources" and words in e.value.message


def test_good_resources_pass():
    from fixtures import gameserver
    parse_gameserver(gameserver(resources={"requests": {"cpu": "+1", "memory": "1e3"}}))
    gs = parse_gameserver(gameserver(resources={"requests": {"cpu": "500m", "memory": "1.5Gi",
                                                             "nvidia.com/gpu": 1},
                                                "limits": {"cpu": 2, "memory": "2G"}}))
    assert gs.resources["limits"]["cpu"] == 2


@pytest.mark.parametrize("field,value,words", [
    ("resources", {"requests": {"cpu": "banana"}}, "Game valheim: spec.resources.requests.cpu"),
    ("securityContext", {"runAsUser": "root"}, "spec.securityContext.runAsUser must be a number"),
    ("command", "run.sh", "spec.command must be a list of strings"),
    ("files", [{"name": "w", "path": "/config"}], "mounted at the data path itself"),
])
def test_a_game_no_pod_can_be_built_from_says_which_field(field, value, words):
    g = game()
    g["spec"][field] = value
    with pytest.raises(InvalidSpec) as e:
        parse_game(g)
    assert e.value.reason == "InvalidGame" and words in e.value.message


def test_every_catalogue_game_passes_the_checks():
    import pathlib
    import yaml
    for f in (pathlib.Path(__file__).resolve().parents[3] / "examples" / "games").glob("*.yaml"):
        parse_game(yaml.safe_load(f.read_text()))
