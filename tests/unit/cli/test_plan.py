"""`peon plan convert`: PEON's plan.json as a Game, or an error that names the field."""
import copy
import json

import pytest
import yaml

from peon.cli.main import main
from peon.shared.model import parse_game
from peon.cli.plan import PlanError, convert_plan
from test_catalogue import game_schema_errors

# As in the-peon-project/peon-warplans (valheim/plan.json, 2024).
VALHEIM = {
    "metadata": {"game_uid": "valheim", "warcamp": "default", "version": "1.0.0",
                 "description": "A PEON valheim game server.", "mode": "steamcmd",
                 "hostname": "peon.warcamp.valheim", "image": "umlatt/steamcmd"},
    "ports": [[{"PORT": ["2456", "udp"]}], [{"PORT": ["2457", "udp"]}], [{"PORT": ["2458", "udp"]}]],
    "environment": {"STEAM_ID": "896660", "SERVER_NAME": None, "WORLD_NAME": None,
                    "PASSWORD": None},
    "volumes": {"~!/actions": "/actions", "~!/config": "/home/steam/config",
                "~!/data": "/home/steam/steamcmd/data",
                "~!/user": "/home/steam/.config/unity3d/IronGate/Valheim"},
}

# Its Sons of the Forest plan: several ports in group 0, defaults, a config file, no ~!/user.
SOF = {
    "metadata": {"game_uid": "sonsoftheforest", "server_name": "default",
                 "image": "jammsen/sons-of-the-forest-dedicated-server"},
    "ports": [[{"GAME_PORT": ["8766", "udp"]}, {"QUERY_PORT": ["27016", "udp"]},
               {"BLOB_SYNC_PORT": ["9700", "udp"]}]],
    "environment": {"STEAM_ID": "2465200", "SERVER_NAME": None, "PASSWORD": None,
                    "PASSWORD_ADMIN": None, "MAX_PLAYERS": "8", "ENABLE_VAC": "true"},
    "volumes": {"~!/actions": "/actions", "~!/data": "/home/steam/steamcmd/sof",
                "~!/config": "/home/steam/.config/unity3d/Endnight/SonsOfTheForestDS"},
    "files": {"~!/server.cfg": "/home/steam/.config/unity3d/Endnight/SonsOfTheForestDS/dedicatedserver.cfg"},
}

# Its Starbound plan ("all") and Windrose plan ("tcp/udp").
STARBOUND = {
    "metadata": {"game_uid": "starbound", "image": "umlatt/steamcmd"},
    "ports": [[{"PORT_A": ["8766", "tcp"]}, {"PORT_B": ["21025", "all"]}, {"PORT_C": ["27016", "udp"]}]],
    "environment": {"STEAM_ID": "533830"},
    "volumes": {"~!/data": "/home/steam/steamcmd/data", "~!/user": "/home/steam/.config"},
}

# The 2022 format (valhiem, vrising): game_id, lists of one-key maps or key/value records.
OLD_VRISING = {
    "metadata": {"game_id": "vrising", "image": "umlatt/steamcmd-winehq"},
    "ports": [[{"key": "PORT", "type": "udp", "value": "9876"},
               {"key": "QUERYPORT", "type": "udp", "value": "9877"}]],
    "environment": [{"key": "STEAM_ID", "value": "1829350"}, {"key": "SERVER_NAME", "value": None}],
    "volumes": [{"key": "./data", "value": "/home/steam/steamcmd/data"},
                {"key": "./user", "value": "/home/steam/server_user_data"}],
    "files": [{"key": "ServerHostSettings.json", "set": False,
               "path": "/home/steam/steamcmd/data/VRisingServer_Data/StreamingAssets/Settings/ServerHostSettings.json"}],
}
OLD_VALHIEM = {
    "metadata": {"game_id": "valhiem", "image": "umlatt/steamcmd"},
    "ports": [[{"PORT": ["2456", "udp"]}]],
    "environment": [{"STEAM_ID": "896660"}, {"PASSWORD": None}],
    "volumes": [{"./data": "/home/steam/steamcmd/data"}, {"./server_start": "/init/server_start"}],
}


def env(game):
    return {e["name"]: e for e in game["spec"].get("env", [])}


def ports(game):
    return [(p["name"], p["containerPort"], p["protocol"]) for p in game["spec"]["ports"]]


@pytest.mark.parametrize("plan", [VALHEIM, SOF, STARBOUND, OLD_VRISING, OLD_VALHIEM],
                         ids=["valheim", "sof", "starbound", "old-vrising", "old-valhiem"])
def test_a_converted_plan_is_a_valid_game(plan):
    game = convert_plan(copy.deepcopy(plan))
    assert game_schema_errors(game) == []
    g = parse_game(game)            # and the operator can build a pod from it
    assert g.ports and g.data_path.startswith("/")


def test_valheim_plan():
    game = convert_plan(VALHEIM)
    assert game["metadata"]["name"] == "valheim"
    spec = game["spec"]
    assert spec["image"] == "umlatt/steamcmd" and spec["steamAppId"] == 896660
    assert ports(game) == [("port", 2456, "UDP")]          # group 0 only, as PEON deployed
    e = env(game)
    assert e["SERVER_NAME"] == {"name": "SERVER_NAME", "required": True}
    assert e["PASSWORD"] == {"name": "PASSWORD", "required": True, "secret": True}
    assert e["STEAM_ID"]["default"] == "896660"
    assert e["PORT"]["default"] == "2456"                   # PEON passed ports as variables
    assert spec["dataPath"] == "/home/steam/.config/unity3d/IronGate/Valheim"   # the save volume
    assert spec["securityContext"]["runAsUser"] == 1000
    assert spec["query"] == {"protocol": "none"}


def test_sof_plan_defaults_files_query_and_uid():
    game = convert_plan(SOF, "sof")
    assert game["metadata"]["name"] == "sof"
    assert ports(game) == [("game-port", 8766, "UDP"), ("query-port", 27016, "UDP"),
                           ("blob-sync-port", 9700, "UDP")]
    e = env(game)
    assert e["MAX_PLAYERS"] == {"name": "MAX_PLAYERS", "default": "8"}
    assert e["PASSWORD_ADMIN"]["required"] and e["PASSWORD_ADMIN"]["secret"]
    assert e["GAME_PORT"]["default"] == "8766"
    assert game["spec"]["dataPath"] == "/home/steam/steamcmd/sof"   # no ~!/user: ~!/data
    assert game["spec"]["files"] == [{"name": "server.cfg", "path": SOF["files"]["~!/server.cfg"]}]
    assert game["spec"]["query"] == {"protocol": "a2s", "port": "query-port"}
    with pytest.raises(PlanError, match="metadata.game_uid"):
        convert_plan(SOF, "Sons Of The Forest")


def test_both_protocols_give_two_ports():
    game = convert_plan(STARBOUND)
    assert ports(game) == [("port-a", 8766, "TCP"), ("port-b", 21025, "UDP"),
                           ("port-b-tcp", 21025, "TCP"), ("port-c", 27016, "UDP")]
    windrose = {"metadata": {"game_uid": "windrose", "image": "umlatt/steamcmd-proton"},
                "ports": [[{"PORT": ["7777", "tcp/udp"]}]],
                "volumes": {"~!/user": "/home/steam/steamcmd/data/R5/Saved"}}
    assert ports(convert_plan(windrose)) == [("port", 7777, "UDP"), ("port-tcp", 7777, "TCP")]


def test_old_formats():
    vr = convert_plan(OLD_VRISING)
    assert vr["metadata"]["name"] == "vrising"
    assert ports(vr) == [("port", 9876, "UDP"), ("queryport", 9877, "UDP")]
    assert env(vr)["SERVER_NAME"]["required"] and vr["spec"]["steamAppId"] == 1829350
    assert vr["spec"]["dataPath"] == "/home/steam/server_user_data"
    assert vr["spec"]["files"][0]["name"] == "ServerHostSettings.json"
    assert vr["spec"]["query"] == {"protocol": "a2s", "port": "queryport"}
    va = convert_plan(OLD_VALHIEM)
    assert va["metadata"]["name"] == "valhiem" and va["spec"]["dataPath"] == "/home/steam/steamcmd/data"


def test_names_fit_kubernetes():
    plan = {"metadata": {"game_uid": "x", "image": "i"},
            "ports": [[{"DIRECT_CONNECTION_SERVER_PORT": ["7777", "all"]},
                       {"PORT": ["27960", "tcp/udp"]}, {"PORT": ["8080", "tcp/udp"]}]],
            "volumes": {"~!/data": "/data"}}
    names = [p["name"] for p in convert_plan(plan)["spec"]["ports"]]
    assert names == ["direct-connecti", "direct-conn-tcp", "port", "port-tcp", "port-2",
                     "port-tcp-2"]
    assert all(len(n) <= 15 for n in names) and len(set(names)) == len(names)
    assert env(convert_plan(plan))["PORT"]["default"] == "27960"    # the first PORT, as PEON


@pytest.mark.parametrize("change, field", [
    (lambda p: p.pop("ports"), r"^ports: the plan has no ports"),
    (lambda p: p.update(ports=[]), r"^ports: the plan has no ports"),
    (lambda p: p.update(ports=[[]]), r"^ports: the plan has no ports"),
    (lambda p: p.update(ports=[[{"PORT": ["2456", "sctp"]}]]), r"^ports\[0\]\[0\]\.PORT: unknown protocol 'sctp'"),
    (lambda p: p.update(ports=[[{"PORT": ["2456", "udp"]}, {"Q": ["x", "udp"]}]]), r"^ports\[0\]\[1\]\.Q: 'x' is not a port"),
    (lambda p: p.update(ports=[[{"PORT": ["70000", "udp"]}]]), r"^ports\[0\]\[0\]\.PORT: port 70000 is out of range"),
    (lambda p: p.update(ports=[[{"PORT": "2456/udp"}]]), r"^ports\[0\]\[0\]\.PORT: expected \[port, protocol\]"),
    (lambda p: p["metadata"].pop("image"), r"^metadata\.image: the plan names no image"),
    (lambda p: p["metadata"].update(image="  "), r"^metadata\.image"),
    (lambda p: p["metadata"].pop("game_uid"), r"^metadata\.game_uid"),
    (lambda p: p.update(volumes={"~!/config": "/home/steam/config"}), r"^volumes: no save volume"),
    (lambda p: p.update(volumes={"~!/user": "relative/path"}), r"^volumes\.~!/user"),
    (lambda p: p["environment"].update({"BAD NAME": "x"}), r"^environment\.BAD NAME"),
    (lambda p: p.update(environment="SERVER_NAME"), r"^environment: expected an object"),
    (lambda p: p.update(metadata=[]), r"^metadata: expected an object"),
])
def test_broken_plans_name_the_field(change, field):
    plan = copy.deepcopy(VALHEIM)
    change(plan)
    with pytest.raises(PlanError, match=field):
        convert_plan(plan)


def test_not_an_object():
    with pytest.raises(PlanError, match="^plan: expected a JSON object"):
        convert_plan([VALHEIM])
    assert issubclass(PlanError, ValueError)


def test_cli_prints_yaml(tmp_path, capsys):
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(SOF))
    assert main(["plan", "convert", str(f), "--uid", "sof"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Converted by `peon plan convert`")
    game = yaml.safe_load(out)
    assert game == convert_plan(SOF, "sof")
    assert game_schema_errors(game) == []


def test_cli_error_goes_to_stderr_with_2(tmp_path, capsys):
    f = tmp_path / "plan.json"
    broken = copy.deepcopy(VALHEIM)
    broken["ports"] = [[{"PORT": ["2456", "sctp"]}]]
    f.write_text(json.dumps(broken))
    assert main(["plan", "convert", str(f)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "peon plan convert: ports[0][0].PORT: unknown protocol" in captured.err
    f.write_text("{not json")
    assert main(["plan", "convert", str(f)]) == 2
    assert main(["plan", "convert", str(tmp_path / "missing.json")]) == 2
