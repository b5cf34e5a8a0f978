"""The real-node test game (tests/realnode/testgame/testgame.py), run as a subprocess on loopback:
its A2S query port (through python-a2s and raw packets), its game port, its world on disk, its
report and its shutdown."""
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import a2s
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "realnode" / "testgame" / "testgame.py"
HEADER = b"\xff\xff\xff\xff"
INFO_REQUEST = HEADER + b"TSource Engine Query\x00"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Game:
    """One `testgame serve` process with its own ports, data folder and report file."""

    def __init__(self, tmp: pathlib.Path, **env):
        self.tmp = tmp
        self.game_port, self.query_port = free_udp_port(), free_udp_port()
        self.data = tmp / "data"
        self.state = tmp / "state" / "report.json"
        # LANG set, or Python's locale coercion would add LC_CTYPE to the environment it reports.
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                    "BIND_ADDRESS": "127.0.0.1", "GAME_PORT": str(self.game_port),
                    "QUERY_PORT": str(self.query_port), "DATA_DIR": str(self.data),
                    "TESTGAME_STATE": str(self.state), "TESTGAME_CONFIG": str(tmp / "no-config"),
                    "TESTGAME_TICK": "0.05"}
        self.env.update(env)
        self.proc = None
        self.out = self.err = ""

    def start(self) -> "Game":
        if self.state.exists():
            self.state.unlink()
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), "serve"], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: self.state.exists() or self.proc.poll() is not None, what="the report")
        assert self.proc.poll() is None, self.proc.communicate()
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=5)
        self.out += out
        self.err += err
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def report(self) -> dict:
        return json.loads(self.state.read_text())

    def send(self, message: str) -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(message.encode(), ("127.0.0.1", self.game_port))
            return s.recv(2048).decode()

    @property
    def query(self):
        return ("127.0.0.1", self.query_port)

    @property
    def world(self) -> pathlib.Path:
        return self.data / "worlds" / self.env.get("WORLD_NAME", "Dedicated")


@pytest.fixture
def games(tmp_path):
    started = []

    def make(sub="g", **env):
        game = Game(tmp_path / sub, **env)
        started.append(game)
        return game

    yield make
    for game in started:
        game.kill()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=10)


def test_version_command():
    assert run_cli("version", env={"TESTGAME_VERSION": "2.5"}).stdout == "2.5\n"
    assert run_cli("version", env={}).stdout == "dev\n"
    bad = run_cli("frobnicate", env={})
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_a2s_info_and_players_follow_joins_and_leaves(games):
    g = games(SERVER_NAME="Peon Realm", WORLD_NAME="Midgard", TESTGAME_VERSION="1.2.3",
              MAX_PLAYERS="16").start()
    info = a2s.info(g.query, timeout=2)
    assert (info.protocol, info.server_name, info.map_name, info.folder, info.game) == \
        (17, "Peon Realm", "Midgard", "testgame", "Peon Test Game")
    assert (info.app_id, info.player_count, info.max_players, info.bot_count) == (0, 0, 16, 0)
    assert (info.server_type, info.platform, info.password_protected, info.vac_enabled) == \
        ("d", "l", False, False)
    assert info.version == "1.2.3" and info.has_port and info.port == g.game_port
    assert a2s.players(g.query, timeout=2) == []

    assert g.send("JOIN alice") == "WELCOME alice"
    assert g.send("JOIN bob") == "WELCOME bob"
    assert a2s.info(g.query, timeout=2).player_count == 2
    players = a2s.players(g.query, timeout=2)
    assert sorted(p.name for p in players) == ["alice", "bob"]
    assert all(p.score == 0 and 0 <= p.duration < 60 for p in players)
    assert (g.world / "players" / "alice.json").is_file()
    assert json.loads((g.world / "players" / "bob.json").read_text())["name"] == "bob"

    assert g.send("LEAVE alice") == "BYE alice"
    assert a2s.info(g.query, timeout=2).player_count == 1
    assert [p.name for p in a2s.players(g.query, timeout=2)] == ["bob"]
    assert [p["name"] for p in g.report()["players"]] == ["bob"]  # rewritten before the reply

    world_id = json.loads((g.world / "meta.json").read_text())["world_id"]
    assert g.send("PING") == f"PONG 1.2.3 {world_id}"
    assert a2s.rules(g.query, timeout=2) == {"world_id": world_id, "version": "1.2.3"}
    for bad in ["JOIN b@d", "JOIN " + "x" * 33, "JOIN", "LEAVE ../etc", "HELLO", "", "PING x"]:
        assert g.send(bad) == "ERR", bad
    assert g.stop() == 0
    assert "testgame: player alice joined (1 online)" in g.out
    assert "testgame: player alice left (1 online)" in g.out


def test_a2s_needs_a_challenge_from_the_same_address(games):
    g = games().start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        s.settimeout(2)
        other.settimeout(2)

        def ask(sock, payload):
            sock.sendto(payload, g.query)
            return sock.recv(2048)

        reply = ask(s, INFO_REQUEST)  # the pre-2020 request: no challenge
        assert reply[:5] == HEADER + b"\x41" and len(reply) == 9
        challenge = reply[5:]
        assert challenge not in (b"\x00" * 4, HEADER)
        wrong = bytes(b ^ 0x5A for b in challenge)
        assert ask(s, INFO_REQUEST + wrong)[:5] == HEADER + b"\x41"
        info = ask(s, INFO_REQUEST + challenge)
        assert info[:6] == HEADER + b"\x49\x11"
        assert info.endswith(b"\x80" + struct.pack("<H", g.game_port))
        # The challenge belongs to the address it was given to.
        assert ask(other, INFO_REQUEST + challenge)[:5] == HEADER + b"\x41"

        reply = ask(s, HEADER + b"\x55" + HEADER)  # A2S_PLAYER asking for a challenge
        assert reply[:5] == HEADER + b"\x41"
        assert ask(s, HEADER + b"\x55" + wrong)[:5] == HEADER + b"\x41"
        assert ask(s, HEADER + b"\x55" + reply[5:9]) == HEADER + b"\x44\x00"
        assert ask(s, HEADER + b"\x57")[:5] == HEADER + b"\x41"  # legacy A2S_SERVERQUERY_GETCHALLENGE
    assert g.stop() == 0


def test_password_denies_and_is_never_logged(games):
    secret = "hunter22-s3cret"
    g = games(SERVER_PASS=secret, MAX_PLAYERS="1").start()
    assert a2s.info(g.query, timeout=2).password_protected is True
    assert g.send("JOIN alice") == "DENIED"
    assert g.send("JOIN alice nope") == "DENIED"
    assert a2s.info(g.query, timeout=2).player_count == 0
    assert g.send(f"JOIN alice {secret}") == "WELCOME alice"
    assert g.send(f"JOIN alice {secret}") == "WELCOME alice"  # already in: still one player
    assert g.send(f"JOIN bob {secret}") == "FULL"
    assert [p.name for p in a2s.players(g.query, timeout=2)] == ["alice"]
    report = g.report()
    assert report["env"]["SERVER_PASS"] == secret and report["server"]["password_set"] is True
    assert g.stop() == 0
    assert secret not in g.out and secret not in g.err
    assert "testgame: player alice denied (wrong password)" in g.out


def test_world_grows_saves_on_sigterm_and_is_loaded_again(games):
    g = games(TESTGAME_VERSION="1.0").start()
    world = g.world
    meta = json.loads((world / "meta.json").read_text())
    assert len(meta["world_id"]) == 32 and int(meta["world_id"], 16) >= 0
    assert meta["version"] == "1.0" and meta["created"]
    assert (world / "players").is_dir() and (world / "saves").is_dir()
    db = world / "world.db"
    wait_for(lambda: db.exists() and db.stat().st_size > 0, what="world.db")
    size = db.stat().st_size
    wait_for(lambda: db.stat().st_size > size, what="world.db to grow")
    wait_for(lambda: json.loads((world / "meta.json").read_text())["ticks"] >= 3, what="ticks")
    assert g.report()["world"]["created_now"] is True
    assert g.send("JOIN carol") == "WELCOME carol"

    began = time.monotonic()
    assert g.stop(signal.SIGTERM) == 0
    assert time.monotonic() - began < 2
    assert "testgame: saved on SIGTERM" in g.out
    assert f"testgame: world Dedicated created (id {meta['world_id']})" in g.out
    save = json.loads((world / "saves" / "world.sav").read_text())
    assert save["world_id"] == meta["world_id"] and save["players"] == ["carol"] and save["saved"]
    ticks = json.loads((world / "meta.json").read_text())["ticks"]
    assert save["ticks"] == ticks >= 3
    lines = db.read_text().splitlines()
    assert [line.split()[1] for line in lines] == [str(n) for n in range(1, ticks + 1)]
    assert all(line.startswith("tick ") and len(line.split()) == 3 for line in lines)

    # Same data folder, a newer version: the same world, and its clock goes on.
    g.env["TESTGAME_VERSION"] = "2.0"
    g.start()
    report = g.report()
    assert report["world"]["id"] == meta["world_id"] and report["world"]["created_now"] is False
    assert report["world"]["loaded_save"]["ticks"] == ticks
    assert report["world"]["created_version"] == "1.0" and report["version"] == "2.0"
    wait_for(lambda: json.loads((world / "meta.json").read_text())["ticks"] >= ticks + 2,
             what="ticks to continue")
    assert a2s.info(g.query, timeout=2).player_count == 0  # players are online, not saved
    assert g.stop(signal.SIGINT) == 0
    assert f"testgame: world Dedicated loaded (id {meta['world_id']}, ticks {ticks})" in g.out
    assert "testgame: saved on SIGINT" in g.out
    meta = json.loads((world / "meta.json").read_text())
    assert meta["version"] == "1.0" and meta["last_version"] == "2.0" and meta["ticks"] > ticks
    assert db.read_text().splitlines()[ticks].startswith(f"tick {ticks + 1} ")


def test_console_save_off_keeps_the_world_in_memory_until_save_all_and_save_on(games):
    """The rcon-cli of the test game: what a Game's backupHooks run around a backup."""
    g = games().start()
    meta_path, db = g.world / "meta.json", g.world / "world.db"
    wait_for(lambda: json.loads(meta_path.read_text())["ticks"] >= 2, what="ticks")

    def console(command):
        return run_cli("console", command, env={**g.env})

    off = console("save-off")
    assert off.returncode == 0 and off.stdout.strip() == "OK save-off"
    frozen = meta_path.read_bytes(), db.read_bytes()
    wait_for(lambda: g.report()["world"]["ticks"] >= json.loads(frozen[0])["ticks"] + 3,
             what="ticks in memory")
    assert (meta_path.read_bytes(), db.read_bytes()) == frozen  # nothing reaches the disk
    assert g.report()["world"]["saving"] is False

    assert console("save-all").returncode == 0  # the world now, whole, on disk
    meta = json.loads(meta_path.read_text())
    save = json.loads((g.world / "saves" / "world.sav").read_text())
    assert save["reason"] == "save-all" and save["ticks"] == meta["ticks"]
    assert db.read_text().splitlines()[-1].split()[1] == str(meta["ticks"])
    time.sleep(0.2)  # still off: save-all does not turn saving on
    assert json.loads(meta_path.read_text())["ticks"] == meta["ticks"]

    assert console("save-on").returncode == 0
    wait_for(lambda: json.loads(meta_path.read_text())["ticks"] > meta["ticks"], what="saving again")
    assert [c["command"] for c in g.report()["console"]] == ["save-off", "save-all", "save-on"]
    bad = console("explode")
    assert bad.returncode == 1 and "ERR unknown command 'explode'" in bad.stdout
    assert g.stop(signal.SIGTERM) == 0
    nobody = console("save-all")  # no server: a clear error, not a hang
    assert nobody.returncode == 1 and "no server answers" in nobody.stderr
    lines = db.read_text().splitlines()
    assert [int(x.split()[1]) for x in lines] == list(range(1, len(lines) + 1))  # none lost


def test_report_has_the_environment_and_config_files(games, tmp_path):
    conf = tmp_path / "conf"
    (conf / "conf.d" / "sub").mkdir(parents=True)
    single = conf / "server.cfg"
    single.write_text("port=2456\n")
    (conf / "conf.d" / "a.ini").write_text("[a]\nx = 1\n")
    (conf / "conf.d" / "sub" / "b.bin").write_bytes(b"\xffbinary\x00")
    # A ConfigMap volume's layout: visible names are symlinks through ..data into a hidden folder.
    (conf / "cm" / "..2024_01_01").mkdir(parents=True)
    (conf / "cm" / "..2024_01_01" / "game.yaml").write_text("mode: test\n")
    (conf / "cm" / "..data").symlink_to("..2024_01_01")
    (conf / "cm" / "game.yaml").symlink_to("..data/game.yaml")
    paths = [str(single), str(conf / "conf.d"), str(conf / "missing"), str(conf / "cm")]
    g = games(SERVER_PASS="pa55word", TESTGAME_CONFIG=":".join(paths), EXTRA_SETTING="on")
    g.start()

    result = run_cli("report", env={"TESTGAME_STATE": str(g.state)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["env"] == g.env
    assert report["state"] == "running" and report["pid"] == g.proc.pid
    assert report["uid"] == os.getuid()
    files = {f["path"]: f for f in report["config"]["files"]}
    expected = {
        str(single): b"port=2456\n",
        str(conf / "conf.d" / "a.ini"): b"[a]\nx = 1\n",
        str(conf / "conf.d" / "sub" / "b.bin"): b"\xffbinary\x00",
        str(conf / "cm" / "game.yaml"): b"mode: test\n",
    }
    assert set(files) == set(expected)
    for path, data in expected.items():
        assert files[path]["size"] == len(data)
        assert files[path]["sha256"] == hashlib.sha256(data).hexdigest()
        assert files[path]["text"] == data.decode("utf-8", errors="replace")
    assert report["config"]["missing"] == [str(conf / "missing")]
    assert g.stop() == 0
    assert "pa55word" not in g.out + g.err
    assert "testgame: read 4 config file(s)" in g.out
    assert g.report()["state"] == "stopped"

    missing = run_cli("report", env={"TESTGAME_STATE": str(tmp_path / "nope.json")})
    assert missing.returncode == 1 and "no report at" in missing.stderr


def _drop_to_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _python_for_nobody():
    """An interpreter uid 65534 may run (the venv's may sit under root's 0700 home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 11)"],
                                   preexec_fn=_drop_to_nobody, cwd="/", capture_output=True,
                                   timeout=10)
        except OSError:  # not executable for that uid
            continue
        if probe.returncode == 0:
            return candidate
    return None


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:  # root writes through 0555: run the game as nobody instead
        python = _python_for_nobody()
        if python is None:
            pytest.skip("no python3 that uid 65534 can run")
        base = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))  # not under pytest's 0700 folders
        base.chmod(0o755)
        preexec = _drop_to_nobody
    else:
        python, base, preexec = sys.executable, tmp_path, None
    data = base / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        env = {"DATA_DIR": str(data), "BIND_ADDRESS": "127.0.0.1",
               "GAME_PORT": str(free_udp_port()), "QUERY_PORT": str(free_udp_port()),
               "TESTGAME_STATE": str(base / "state" / "report.json"),
               "TESTGAME_CONFIG": str(base / "none"), "SERVER_PASS": "t0ps3cret"}
        result = subprocess.run([python, str(SCRIPT), "serve"], env=env, cwd="/",
                                preexec_fn=preexec, capture_output=True, text=True, timeout=10)
        assert result.returncode == 1
        assert f"testgame: cannot write the world at {data}: Permission denied" in result.stderr
        assert not (data / "worlds").exists()
        assert "t0ps3cret" not in result.stdout + result.stderr
    finally:
        data.chmod(0o755)
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)
