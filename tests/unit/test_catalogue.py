"""The shipped catalogue: every Game parses, names its source, and has sane ports."""
import pytest
import yaml

from peon.model import parse_game
from fixtures import ROOT

GAMES = sorted((ROOT / "examples" / "games").glob("*.yaml"))
REQUIRED = {"valheim", "minecraft", "factorio", "terraria", "palworld", "satisfactory", "cs2",
            "7dtd", "enshrouded", "vrising", "projectzomboid", "rust"}


def test_catalogue_has_the_games_users_ask_for():
    assert REQUIRED <= {p.stem for p in GAMES}


@pytest.mark.parametrize("path", GAMES, ids=lambda p: p.stem)
def test_game_is_complete(path):
    obj = yaml.safe_load(path.read_text())
    assert obj["metadata"]["name"] == path.stem
    assert obj["spec"]["source"].startswith("https://")
    g = parse_game(obj)
    assert g.ports and all(len(p.name) <= 15 for p in g.ports)
    assert len({(p.container_port, p.protocol) for p in g.ports}) == len(g.ports)
    assert g.data_path.startswith("/")
    if g.query.protocol != "none":
        assert g.query.port in {p.name for p in g.ports}


def test_catalogue_agrees_with_peon_ports_where_it_should():
    """Cross-check with PEON's tested plans (shared/catalogue-facts.md); where an entry differs,
    its manifest says why."""
    ports = {p.stem: {(x.container_port, x.protocol) for x in parse_game(
        yaml.safe_load(p.read_text())).ports} for p in GAMES}
    assert {(2456, "UDP"), (2457, "UDP")} <= ports["valheim"]
    assert (34197, "UDP") in ports["factorio"] and (27015, "TCP") in ports["factorio"]
    assert {(26900, "TCP"), (26900, "UDP"), (26901, "UDP"), (26902, "UDP")} <= ports["7dtd"]
    assert {(28015, "UDP"), (28016, "TCP")} <= ports["rust"]
    assert {(9876, "UDP"), (9877, "UDP")} <= ports["vrising"]
    assert {(16261, "UDP"), (16262, "UDP")} <= ports["projectzomboid"]
    assert (7777, "TCP") in ports["terraria"]
    assert {(27015, "UDP"), (27020, "UDP")} <= ports["cs2"]
    assert {(7777, "UDP"), (7777, "TCP"), (8888, "TCP")} <= ports["satisfactory"]
    assert (25565, "TCP") in ports["minecraft"]
