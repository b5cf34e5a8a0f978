import json
import subprocess
import sys

import pytest
import yaml

from peon.shared.convert import PayloadError, convert, dns_label
from fixtures import ROOT

SEED = json.loads((ROOT / "examples" / "peon-payload.json").read_text())


def test_seed_payload_converts_setting_for_setting():
    [gs] = convert(SEED, namespace="games")
    assert gs["kind"] == "GameServer" and gs["metadata"] == {"name": "server01", "namespace": "games"}
    assert gs["spec"]["gameUid"] == "valhiem"
    assert gs["spec"]["description"] == "A valhiem PEON server"
    assert [s["type"] for s in gs["spec"]["settings"]] == ["env", "json", "txt"]
    assert gs["spec"]["settings"][2]["content"] == SEED["settings"][2]["content"]


def test_secret_env_moves_passwords_out_of_the_gameserver():
    secret, gs = convert(SEED, secret_env=True)
    assert secret["kind"] == "Secret" and secret["stringData"]["PASSWORD"] == "password123"
    assert "password123" not in json.dumps(gs)
    assert gs["spec"]["settings"][0]["secretRef"]["name"] == secret["metadata"]["name"]


def test_bad_payloads():
    with pytest.raises(PayloadError, match="game_uid"):
        convert({"servername": "x"})
    with pytest.raises(PayloadError, match="type must be"):
        convert({"game_uid": "valheim", "servername": "x", "settings": [{"type": "ini"}]})
    assert dns_label("My Valheim_Server!") == "my-valheim-server"


def test_cli_prints_yaml_and_fails_cleanly():
    out = subprocess.run([sys.executable, "-m", "peon.commands", "convert",
                          str(ROOT / "examples" / "peon-payload.json")],
                         capture_output=True, text=True, check=True).stdout
    assert yaml.safe_load(out)["spec"]["serverName"] == "server01"
    bad = subprocess.run([sys.executable, "-m", "peon.commands", "convert", "/nonexistent.json"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "peon convert:" in bad.stderr


def test_names_that_kubernetes_would_refuse_become_valid_ones():
    from peon.shared.convert import convert
    docs = convert({"game_uid": "7dtd", "servername": "7 Days Crew", "settings": [
        {"type": "txt", "name": "server config.xml", "content": "<x/>"},
        {"type": "json", "name": "../../etc/passwd", "content": {}}]})
    gs = docs[-1]
    assert gs["metadata"]["name"] == "gs-7-days-crew"
    assert [s["name"] for s in gs["spec"]["settings"]] == ["server_config.xml", "passwd"]
    import re
    for s in gs["spec"]["settings"]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", s["name"])


def test_a_txt_setting_keeps_peons_name_through_path():
    """Issue 27, item 3: `server settings.v2.txt` is the file the game reads; the setting's
    name must be a plain one (a ConfigMap key), so the name PEON gave goes through `path`."""
    from peon.shared.convert import convert
    game = {"kind": "Game", "metadata": {"name": "7dtd"}, "spec": {
        "dataPath": "/data", "configPath": "/config",
        "files": [{"name": "admins.xml", "path": "/data/Saves/serveradmin.xml"}]}}
    payload = {"game_uid": "7dtd", "servername": "crew", "settings": [
        {"type": "txt", "name": "server settings.v2.txt", "content": "a=1"},
        {"type": "txt", "name": "plain.txt", "content": "b"},
        {"type": "json", "name": "../../etc/passwd", "content": {}},
        {"type": "txt", "name": "admins.xml", "content": "<x/>"}]}
    settings = convert(payload, game=game)[-1]["spec"]["settings"]
    assert settings[0] == {"type": "txt", "name": "server_settings.v2.txt", "content": "a=1",
                           "path": "/config/server settings.v2.txt"}
    assert "path" not in settings[1] and "path" not in settings[3]  # plain: the Game's place
    assert settings[2]["name"] == "passwd" and "path" not in settings[2]  # never a payload's path
    # Without the Game, the plain name only (the command says how to keep PEON's).
    assert "path" not in convert(payload)[-1]["spec"]["settings"][0]
    from peon.shared.model import parse_gameserver  # the operator takes it
    gs = convert(payload, namespace="games", game=game)[-1]
    gs["metadata"].update(uid="u", generation=1)
    assert parse_gameserver(gs).settings[0].path == "/config/server settings.v2.txt"


def test_peon_convert_with_the_game_keeps_the_name_and_says_so_without(tmp_path):
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps({"game_uid": "valheim", "servername": "x", "settings": [
        {"type": "txt", "name": "server settings.v2.txt", "content": "a"}]}))
    bare = subprocess.run([sys.executable, "-m", "peon.commands", "convert", str(payload)],
                          capture_output=True, text=True, check=True)
    assert "give --game" in bare.stderr
    game = ROOT / "examples" / "games" / "valheim.yaml"
    out = subprocess.run([sys.executable, "-m", "peon.commands", "convert", str(payload),
                          "--game", str(game)], capture_output=True, text=True, check=True)
    [s] = yaml.safe_load(out.stdout)["spec"]["settings"]
    assert s["path"].endswith("/server settings.v2.txt") and s["path"].startswith("/")
    assert out.stderr == ""
