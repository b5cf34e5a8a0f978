"""Every Game of the catalogue, as the suite installed it, runs: a GameServer of each (its
required variables given) reaches Running on the bed, and its Service offers exactly the
Game's ports with their protocols."""
import pathlib

import pytest
import yaml

from gs_helpers import apply_as_user, gameserver, wait_phase
from peon.shared.model import parse_game

ROOT = pathlib.Path(__file__).resolve().parents[2]
GAMES = sorted((ROOT / "examples" / "games").glob("*.yaml"))
pytestmark = pytest.mark.usefixtures("operator")


@pytest.mark.parametrize("path", GAMES, ids=lambda p: p.stem)
def test_a_server_of_every_catalogue_game_runs_with_the_games_ports(kube, namespace, crds, path):
    game = parse_game(yaml.safe_load(path.read_text()))
    required = {e.name: "TRUE" if e.name == "EULA" else "peon-test-value1"
                for e in game.env if e.required}
    name = f"g-{game.uid}"[:40]
    apply_as_user(kube, gameserver(name, namespace, gameUid=game.uid, network={"type": "ClusterIP"},
                                   settings=[{"type": "env", "name": "env", "content": required}]
                                   if required else []))
    wait_phase(kube, namespace, name, "Running", timeout=90)
    svc = kube.get("Service", namespace, name)
    offered = {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert offered == {(p.name, p.container_port, p.protocol) for p in game.ports}
    kube.delete("GameServer", namespace, name)
