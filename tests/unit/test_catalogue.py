"""The shipped catalogue: every Game parses, validates against the Game CRD's schema, names its
source, has sane ports, agrees with PEON's tested plans or says why not, and is the chart's and
README's catalogue too.

`python tests/unit/test_catalogue.py` prints the README's catalogue table; `--write` puts it in
README.md between its markers."""
from __future__ import annotations

import re
import sys

import pytest
import yaml

from peon.shared.model import parse_game
from fixtures import ROOT

GAMES = sorted((ROOT / "examples" / "games").glob("*.yaml"))
CHART_GAMES = ROOT / "charts" / "peon-operator" / "games"
CRD = ROOT / "crds" / "peon.dev_games.yaml"
README = ROOT / "README.md"
SHARED_FACTS = ROOT.parent / "shared" / "catalogue-facts.md"

# PEON's tested games and their plans' ports: the table of ../shared/catalogue-facts.md, copied
# here so a clone without ../shared still checks against it (and compared with it where it is).
PEON_FACTS = """\
| game uid | title | Steam app id | ports | required env | save path (PEON's image) |
|---|---|---|---|---|---|
| 7dtd | 7 Days to Die | 294420 | PORT=26900/tcp/udp, PORT_2=26901/udp, PORT_3=26902/udp | SERVER_NAME | /home/steam/steamcmd/data/7DaysToDieServer |
| ark | Ark | 376030 | PORT=7777/udp, PORT_RAW=7778/udp, PORT_QUERY=27015/udp, PORT_RCON=27020/tcp or PORT=7779/udp, PORT_RAW=7780/udp, PORT_QUERY=27016/udp, PORT_RCON=27021/tcp or PORT=7781/udp, PORT_RAW=7782/udp, PORT_QUERY=27017/udp, PORT_RCON=27022/tcp | SERVER_NAME, ADMIN_PASSWORD, PASSWORD | /home/steam/steamcmd/data/ShooterGame/Saved |
| armareforger | Arma Reforger | 1874900 | PORT=2001/udp, PORT_A2S=17777/udp | SERVER_NAME | /home/steam/steamcmd/data/profile |
| counterstrike | Counter-Strike | 90 | PORT=27015/tcp/udp | SERVER_NAME | /home/steam/steamcmd/data/cstrike |
| cs2 | Counter Strike 2 | 730 | CS2_PORT=27015/tcp/udp, TV_PORT=27020/udp | SERVER_NAME, STEAM_GSLT | — |
| csgo | Counterstrike Global Offensive (CS:GO) | 730 | PORT_GAME=27015/tcp/udp, PORT_RCON=37015/tcp/udp | SERVER_NAME, STEAM_GSLT | — |
| dayz | DayZ | 223350 | PORT=2302/udp | SERVER_NAME | /home/steam/steamcmd/data/profiles |
| dst | Don't Starve Together | 343050 | PORT=10999/udp, PORT_CAVES=11000/udp | SERVER_NAME | /home/steam/.klei |
| dukenukem | Duke Nukem 3D | 434050 | PORT=23513/udp | SERVER_NAME, MAX_PLAYERS, PASSWORD | — |
| enshrouded | Enshrouded | 2278520 | PORT=15636/tcp/udp, QUERYPORT=15637/tcp/udp | SERVER_NAME, PASSWORD | /home/steam/steamcmd/data/savegame |
| ets2 | Euro Truck Simulator 2 | 1948160 | PORT=27015/udp | SERVER_NAME | /home/steam/.local/share/Euro Truck Simulator 2 |
| factorio | Factorio | 427520 | PORT=34197/udp, RCON_PORT=27015/tcp | SERVER_NAME | /home/steam/.factorio |
| gmod | Garry's Mod | 4020 | PORT=27015/tcp/udp | SERVER_NAME | /home/steam/steamcmd/data/garrysmod |
| l4d2 | Left 4 Dead 2 | 222860 | PORT=27015/tcp/udp | SERVER_NAME | /home/steam/steamcmd/data/left4dead2 |
| palworld | Palworld | 2394010 | PORT=8211/tcp, PORTUDP=8211/udp | SERVER_NAME, PASSWORD | /home/steam/steamcmd/data/Pal/Saved |
| projectzomboid | Project Zomboid | 380870 | PORT=16261/udp, PORT_P2P=16262/udp | — | /home/steam/Zomboid |
| quake3 | Quake 3 Arena | 2200 | PORT=27960/tcp/udp, PORT=8080/tcp/udp | STEAM_USER, STEAM_PASSWORD | — |
| rust | Rust | 258550 | PORT=28015/udp, RCON_PORT=28016/tcp | SERVER_NAME | /home/steam/steamcmd/data/server |
| satisfactory | Satisfactory | 1690800 | QUERYPORT=15777/udp, BEACONPORT=15000/udp, PORT=7777/udp, PORT=7777/tcp, PORT=8888/udp, PORT=8888/tcp | SERVER_NAME | /home/steam/.config/Epic/FactoryGame/Saved/SaveGames |
| sof | Sons of the Forest | 2465200 | GAME_PORT=8766/udp, QUERY_PORT=27016/udp, BLOB_SYNC_PORT=9700/udp | SERVER_NAME, PASSWORD, PASSWORD_ADMIN, SERVER_CONTACT | — (data→/home/steam/steamcmd/sof) (config→/home/steam/.config/unity3d/Endnight/SonsOfTheForestDS) |
| squad | Squad | 403240 | PORT=7787/udp, QUERYPORT=27165/udp, RCON_PORT=21114/tcp | SERVER_NAME | /home/steam/steamcmd/data/SquadGame/Saved |
| starbound | Starbound | 533830 | PORT_A=8766/tcp, PORT_B=21025/all, PORT_C=27016/udp | — | /home/steam/.config |
| terraria | Terraria | 105600 | PORT=7777/tcp | SERVER_NAME, PASSWORD | /home/steam/.local/share/Terraria |
| tf2 | Team Fortress 2 | 232250 | PORT=27015/tcp/udp, TV_PORT=27020/udp | SERVER_NAME, STEAM_GSLT | /home/steam/steamcmd/data/tf |
| unturned | Unturned | 1110390 | PORT=27015/udp | — | /home/steam/steamcmd/data/Servers |
| valheim | Valheim | 896660 | PORT=2456/udp or PORT=2457/udp or PORT=2458/udp | SERVER_NAME, WORLD_NAME, PASSWORD | /home/steam/.config/unity3d/IronGate/Valheim |
| vrising | V Rising | 1829350 | PORT=9876/udp, QUERYPORT=9877/udp | SERVER_NAME, WORLD_NAME, PASSWORD | /home/steam/server_user_data |
| windrose | Windrose | 4129620 | PORT=7777/tcp/udp | SERVER_NAME, PASSWORD | /home/steam/steamcmd/data/R5/Saved |
"""


def facts_rows(table: str = PEON_FACTS) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("game uid", "") or set(cells[0]) <= {"-"}:
            continue
        rows[cells[0]] = cells
    return rows


def facts_ports(cell: str) -> set[tuple[int, str]]:
    """PEON's ports as (port, protocol): the first of its alternative groups ("A or B"), as
    PEON itself deployed; tcp/udp and all mean both."""
    if cell in ("", "—"):
        return set()
    out = set()
    for entry in cell.split(" or ")[0].split(","):
        _, _, spec = entry.strip().partition("=")
        port, _, protos = spec.partition("/")
        for proto in ("udp", "tcp") if protos == "all" else protos.split("/"):
            out.add((int(port), proto.upper()))
    return out


PEON = {uid: facts_ports(row[3]) for uid, row in facts_rows().items()}
REQUIRED = set(PEON) | {"minecraft"}


def header(text: str) -> str:
    """The comment above the manifest: where it was verified, and why it differs from PEON."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def unexplained(text: str, peon: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """The (port, protocol) pairs where the Game and PEON's plan differ and the Game's header
    does not name the port."""
    game = {(p.container_port, p.protocol) for p in parse_game(yaml.safe_load(text)).ports}
    said = header(text)
    return {(port, proto) for port, proto in game ^ peon
            if not re.search(rf"(?<!\d){port}(?!\d)", said)}


# --- a walk through the CRD's openAPIV3Schema (no schema library in the venv) -------------

def crd_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def schema_errors(value, schema: dict, path: str = "") -> list[str]:
    """What the API server's structural validation would refuse, plus fields it would silently
    prune (a typo in a Game is a field nobody reads)."""
    where = path or "<root>"
    t = schema.get("type")
    if t == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: expected an integer, not {value!r}"]
    elif t in TYPES and not isinstance(value, TYPES[t]):
        return [f"{where}: expected {t}, not {type(value).__name__}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: {key} is required")
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], f"{path}.{key}" if path else key)
            elif "additionalProperties" in schema:
                errors += schema_errors(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field (the API server would drop it)")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            dupes = {k for k in seen if seen.count(k) > 1}
            if dupes:
                errors.append(f"{where}: duplicate {'/'.join(keys)} {sorted(dupes)}")
    return errors


def game_schema_errors(obj: dict) -> list[str]:
    errors = schema_errors(obj, crd_schema())
    # The one CEL rule: each containerPort and protocol pair once (protocol defaults to UDP).
    ports = (obj.get("spec") or {}).get("ports") or []
    pairs = [(p.get("containerPort"), p.get("protocol", "UDP")) for p in ports]
    if len(set(pairs)) != len(pairs):
        errors.append("spec.ports: each containerPort and protocol pair may appear once")
    return errors


# --- the catalogue table in README.md ---------------------------------------------------------

TABLE_START = "<!-- catalogue-table: generated by `python tests/unit/test_catalogue.py --write` -->"
TABLE_END = "<!-- end catalogue-table -->"


def catalogue_table() -> str:
    rows = ["| Game | Image | Ports | Players asked by | Verified against |", "|---|---|---|---|---|"]
    for path in GAMES:
        spec = yaml.safe_load(path.read_text())["spec"]
        by_port: dict[int, list[str]] = {}
        for p in spec["ports"]:
            by_port.setdefault(p["containerPort"], []).append(p.get("protocol", "UDP").lower())
        ports = ", ".join(f"{n}/{'+'.join(sorted(ps, reverse=True))}" for n, ps in by_port.items())
        q = spec.get("query") or {}
        query = "none" if q.get("protocol", "none") == "none" else f"{q['protocol']} ({q['port']})"
        page = re.sub(r"^https://|#readme$", "", spec["source"])
        rows.append(f"| {spec.get('title', path.stem)} (`{path.stem}`) | `{spec['image']}` | "
                    f"{ports} | {query} | [{page}]({spec['source']}) |")
    return "\n".join(rows) + "\n"


def readme_table() -> str:
    text = README.read_text()
    assert TABLE_START in text and TABLE_END in text, "README.md lost its catalogue-table markers"
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip("\n") + "\n"


# --- tests --------------------------------------------------------------------------------------

def test_catalogue_has_the_games_users_ask_for():
    assert len(REQUIRED) == 29
    assert REQUIRED <= {p.stem for p in GAMES}


def test_the_facts_copy_is_peons_table():
    if not SHARED_FACTS.exists():
        pytest.skip(f"{SHARED_FACTS} is not beside this checkout")
    assert facts_rows(SHARED_FACTS.read_text()) == facts_rows()


@pytest.mark.parametrize("path", GAMES, ids=lambda p: p.stem)
def test_game_is_complete(path):
    obj = yaml.safe_load(path.read_text())
    assert obj["metadata"]["name"] == path.stem
    assert obj["spec"]["source"].startswith("https://")
    assert header(path.read_text()).startswith(("Verified against", "No maintained",
                                                "We found no maintained"))
    g = parse_game(obj)
    assert g.ports and all(len(p.name) <= 15 for p in g.ports)
    assert len({(p.container_port, p.protocol) for p in g.ports}) == len(g.ports)
    assert g.data_path.startswith("/")
    if g.query.protocol != "none":
        assert g.query.port in {p.name for p in g.ports}


@pytest.mark.parametrize("path", GAMES, ids=lambda p: p.stem)
def test_game_validates_against_the_crd_schema(path):
    assert game_schema_errors(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", GAMES, ids=lambda p: p.stem)
def test_game_env_hooks_and_secrets(path):
    spec = yaml.safe_load(path.read_text())["spec"]
    env = spec.get("env") or []
    assert any(e.get("required") or "default" in e for e in env), \
        "no variable is required or defaulted: the image needs at least one"
    for e in env:
        if re.search(r"PASS|PW|TOKEN|GSLT", e["name"]):
            assert e.get("secret"), f"{e['name']} looks like a password: mark it secret"
        assert not ("default" in e and e.get("required")), f"{e['name']}: required or default"
    hooks = spec.get("backupHooks")
    if hooks is not None:
        commands = [h.get("command") for h in (hooks.get("before") or []) + (hooks.get("after") or [])]
        assert commands, "backupHooks without commands"
        assert all(c and all(isinstance(a, str) and a for a in c) for c in commands)
    # A game that documents no save command has no hooks; one that documents a long save asks for
    # the time (the header says where).
    if "terminationGracePeriodSeconds" in spec or hooks:
        assert re.search(r"grace|save|shut|stop", header(path.read_text()), re.I)


@pytest.mark.parametrize("uid", sorted(PEON))
def test_catalogue_differs_from_peons_plans_only_where_it_says_why(uid):
    """Facts cross-check: every port where the Game and PEON's plan differ is named in the
    Game's header comment (valheim: PEON's 2457 was TCP; satisfactory: 15777 is gone; ...)."""
    text = (ROOT / "examples" / "games" / f"{uid}.yaml").read_text()
    missing = unexplained(text, PEON[uid])
    assert not missing, f"{uid}: the header does not explain {sorted(missing)} vs PEON's plan"


def test_the_cross_check_can_fail():
    text = (ROOT / "examples" / "games" / "armareforger.yaml").read_text()
    assert unexplained(text, PEON["armareforger"]) == set()
    silent = "".join(line.replace("19999", "a third port") if line.startswith("#") else line
                     for line in text.splitlines(keepends=True))
    assert unexplained(silent, PEON["armareforger"]) == {(19999, "UDP")}
    assert unexplained(text, PEON["armareforger"] | {(4242, "TCP")}) == {(4242, "TCP")}


def test_facts_parse_groups_and_protocols():
    assert facts_ports("PORT_A=8766/tcp, PORT_B=21025/all, PORT_C=27016/udp") == {
        (8766, "TCP"), (21025, "UDP"), (21025, "TCP"), (27016, "UDP")}
    assert PEON["valheim"] == {(2456, "UDP")}               # the first of PEON's groups
    assert PEON["ark"] == {(7777, "UDP"), (7778, "UDP"), (27015, "UDP"), (27020, "TCP")}
    assert PEON["cs2"] == {(27015, "UDP"), (27015, "TCP"), (27020, "UDP")}
    assert PEON["sof"] and len(PEON) == 28


def test_schema_walk_catches_what_the_api_server_would():
    good = yaml.safe_load((ROOT / "examples" / "games" / "valheim.yaml").read_text())
    assert game_schema_errors(good) == []
    for change, expect in [
            (lambda s: s["ports"][0].update(protocol="SCTP"), "not one of"),
            (lambda s: s["ports"][0].update(containerPort=70000), "> 65535"),
            (lambda s: s["ports"].append(dict(s["ports"][0])), "duplicate name"),
            (lambda s: s["ports"].append({"name": "again", "containerPort": 2456}), "pair"),
            (lambda s: s.update(dataPath="config"), "does not match"),
            (lambda s: s.update(volume="typo"), "unknown field"),
            (lambda s: s.pop("image"), "image is required"),
            (lambda s: s.update(steamAppId="896660"), "expected an integer"),
            (lambda s: s.update(backupHooks={"before": [{"command": []}]}), "fewer than 1"),
            (lambda s: s["env"][0].update(name="BAD NAME"), "does not match")]:
        bad = yaml.safe_load((ROOT / "examples" / "games" / "valheim.yaml").read_text())
        change(bad["spec"])
        errors = game_schema_errors(bad)
        assert any(expect in e for e in errors), (expect, errors)


def test_chart_catalogue_is_the_examples():
    """The chart installs examples/games byte for byte (the integration test checks the rendered
    chart; this catches a forgotten copy before it)."""
    mine = {p.name: p.read_bytes() for p in CHART_GAMES.glob("*.yaml")}
    theirs = {p.name: p.read_bytes() for p in GAMES}
    assert mine == theirs


def test_readme_catalogue_table_is_the_files():
    assert readme_table() == catalogue_table(), \
        "README's catalogue table is stale: run `python tests/unit/test_catalogue.py --write`"


def test_catalogue_agrees_with_peon_ports_where_it_should():
    """Cross-check with PEON's tested plans (shared/catalogue-facts.md); where an entry differs,
    its manifest says why (the test above holds every difference to that)."""
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
    # The games added from PEON's list keep PEON's ports wherever their images agree.
    for uid in ("ark", "dayz", "dukenukem", "l4d2", "sof", "squad", "tf2", "windrose"):
        assert ports[uid] == PEON[uid], uid
    assert PEON["armareforger"] <= ports["armareforger"]
    assert PEON["dst"] <= ports["dst"] and PEON["ets2"] <= ports["ets2"]
    assert PEON["unturned"] <= ports["unturned"] and PEON["gmod"] <= ports["gmod"]
    assert ports["starbound"] == {(21025, "TCP")} and ports["quake3"] == {(27960, "UDP")}


if __name__ == "__main__":
    table = catalogue_table()
    if sys.argv[1:] == ["--write"]:
        text = README.read_text()
        before, rest = text.split(TABLE_START, 1)
        _, after = rest.split(TABLE_END, 1)
        README.write_text(f"{before}{TABLE_START}\n{table}{TABLE_END}{after}")
    else:
        sys.stdout.write(table)
