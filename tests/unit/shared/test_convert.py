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
