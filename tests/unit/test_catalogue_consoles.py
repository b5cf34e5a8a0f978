"""The catalogue's consoles (issue 28, item 2): a Game declares one only where its image's
documentation gives one (its header says where), and what it declares fits the Game: an rcon
console's port is one of the Game's TCP ports and its password is one of the Game's secret
settings; an exec console runs a command the image ships."""
from __future__ import annotations

import base64

import pytest
import yaml

from peon.shared import maintenance as mt
from peon.shared.model import parse_game
from test_catalogue import GAMES, header

# The games whose images document a console Peon can speak: Source RCON on TCP with a password
# from a variable (srcds's `say`), or itzg's rcon-cli. Not declared, and why: Rust's is web RCON
# (a WebSocket); Squad's and Garry's Mod's password is in a config file, not a variable; CS:GO's
# generic image takes no RCON password variable; Counter-Strike (GoldSrc) and Arma Reforger speak
# RCON over UDP; ARK's, Palworld's and Factorio's images document no command to warn players
# with (or, for Factorio, no password variable); the others document no console.
DECLARED = {"minecraft": mt.EXEC, "cs2": mt.RCON, "tf2": mt.RCON, "l4d2": mt.RCON}


def load(path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", GAMES, ids=lambda p: p.stem)
def test_a_console_is_declared_only_where_the_image_documents_one(path):
    game = parse_game(load(path))
    if path.stem not in DECLARED:
        assert game.console is None
        return
    assert game.console is not None and game.console.protocol == DECLARED[path.stem]
    assert "Console:" in header(path.read_text()), "the header says where the console is documented"
    assert "{message}" in game.console.say


@pytest.mark.parametrize("uid", sorted(u for u, p in DECLARED.items() if p == mt.RCON))
def test_an_rcon_console_is_on_the_games_tcp_port_with_a_secret_setting_for_its_password(uid):
    path = next(p for p in GAMES if p.stem == uid)
    obj = load(path)
    game = parse_game(obj)
    c = game.console
    port = next(p for p in game.ports if p.name == c.port)
    assert port.protocol == "TCP"
    ports = {p.name: p.protocol for p in game.ports}
    assert mt.check_console(c, ports) is None
    setting = next(e for e in obj["spec"]["env"] if e["name"] == c.password_key)
    assert setting.get("secret") is True
    # The password as the server's pod reads it: from its settings' Secret.
    secret = {"data": {c.password_key: base64.b64encode(b"s3cret-rcon").decode()}}
    assert mt.console_password(c, game.env, [secret]) == "s3cret-rcon"
    # Without the setting there is no password (an empty default turns RCON off): said, not
    # guessed.
    assert mt.console_password(c, game.env, [{"data": {}}]) is None


def test_minecrafts_console_is_the_rcon_cli_its_backup_hooks_already_run():
    obj = load(next(p for p in GAMES if p.stem == "minecraft"))
    game = parse_game(obj)
    assert game.console.command == ("rcon-cli",)
    hooks = [h["command"][0] for h in obj["spec"]["backupHooks"]["before"]]
    assert "rcon-cli" in hooks
    assert game.console.say_command("The server restarts in 5 minutes.") == \
        "say The server restarts in 5 minutes."


def test_the_check_refuses_a_console_on_a_port_the_game_lacks():
    """The test above can fail: a console on a UDP port, or a port the Game does not have."""
    obj = load(next(p for p in GAMES if p.stem == "cs2"))
    ports = {p["name"]: p.get("protocol", "UDP") for p in obj["spec"]["ports"]}
    assert mt.check_console(mt.Console(mt.RCON, "game", "CS2_RCONPW"), ports)
    assert mt.check_console(mt.Console(mt.RCON, "nope", "CS2_RCONPW"), ports)
