#!/usr/bin/env python3
"""testgame: a fake dedicated game server for Peon's real-node tests.

It behaves like a community game image: configured by environment variables, keeps a world on
the data volume that grows while it runs, answers Steam A2S queries (with the challenge
handshake) on a query port, lets players JOIN/LEAVE over a tiny text protocol on the game port,
and saves on SIGTERM. Like a Minecraft server behind `rcon-cli`, it takes console commands
(`testgame console save-off|save-all|save-on`) over a local socket: with saving off it keeps
the world in memory only, and `save-all` writes it whole, so a backup taken between them holds
one consistent world. Everything it saw at start (environment, config files) goes into a JSON
report outside the data volume so tests can read it with `testgame report`.

    testgame serve     run the server (the image's default command)
    testgame report    print the running server's report JSON
    testgame console COMMAND   send save-off, save-all or save-on to the running server
    testgame version   print the version

Standard library only.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time
import uuid

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
HEADER = b"\xff\xff\xff\xff"
A2S_INFO = 0x54
A2S_PLAYER = 0x55
A2S_RULES = 0x56
A2S_GETCHALLENGE = 0x57
INFO_QUERY = b"Source Engine Query\x00"
MAX_PACKET = 1400
CHALLENGE_TTL = 120.0   # seconds a challenge stays valid
CHALLENGE_REUSE = 30.0  # an address asking again within this gets the same challenge
MAX_CLIENTS = 4096      # addresses remembered for challenges


class Fatal(Exception):
    """A start-up error: the message goes to stderr, the process exits with `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"testgame: {message}", flush=True)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def version() -> str:
    return os.environ.get("TESTGAME_VERSION") or "dev"


def state_path() -> str:
    return os.environ.get("TESTGAME_STATE") or "/tmp/testgame/report.json"


def console_path() -> str:
    return os.path.join(os.path.dirname(state_path()) or ".", "console.sock")


CONSOLE_COMMANDS = ("save-off", "save-all", "save-on")


def write_atomic(path: str, data: bytes, mode: int = 0o644, sync: bool = False) -> None:
    """Write to a temporary file next to `path` and rename it over, so readers never see half."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str, obj, mode: int = 0o644, sync: bool = False) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode, sync)


def env_number(name: str, default, low, high, kind=int):
    """A number from the environment, of `kind` (int or float), within [low, high]."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        # The value itself is not printed: no environment value ever reaches the logs.
        noun = "an integer" if kind is int else "a number"
        raise Fatal(f"{name} must be {noun} from {low} to {high}", 2)
    return value


class Config:
    def __init__(self) -> None:
        env = os.environ
        self.server_name = env.get("SERVER_NAME") or "Test Server"
        self.password = env.get("SERVER_PASS") or ""
        self.world_name = env.get("WORLD_NAME") or "Dedicated"
        if self.world_name in (".", "..") or "/" in self.world_name or "\x00" in self.world_name:
            raise Fatal("WORLD_NAME must be a plain folder name", 2)
        self.max_players = env_number("MAX_PLAYERS", 10, 1, 255)
        self.data_dir = env.get("DATA_DIR") or "/data"
        self.game_port = env_number("GAME_PORT", 2456, 1, 65535)
        self.query_port = env_number("QUERY_PORT", 2457, 1, 65535)
        self.bind = env.get("BIND_ADDRESS") or "0.0.0.0"
        self.version = version()
        self.config_paths = [p for p in (env.get("TESTGAME_CONFIG", "/config")).split(":") if p]
        self.tick = env_number("TESTGAME_TICK", 1.0, 0.01, 3600.0, float)
        # Source RCON on TCP, as many game images offer it (0: off; on only with a password).
        self.rcon_port = env_number("RCON_PORT", 0, 0, 65535)
        self.rcon_password = env.get("RCON_PASSWORD") or ""
        # The Minecraft Java protocol on TCP (0: off): the server-list ping and a login, as a
        # Minecraft server answers them, for the wake gate's tests.
        self.minecraft_port = env_number("MINECRAFT_PORT", 0, 0, 65535)
        self.state = state_path()


def read_config(paths: list[str]) -> tuple[list[dict], list[str]]:
    """Every existing regular file named, and every regular file under a named folder.
    Kubernetes' own `..data` / `..<timestamp>` folders inside ConfigMap and Secret volumes are
    skipped: their files are reached through the visible names, as a game would read them."""
    found: list[str] = []
    missing: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".."))
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if not name.startswith("..") and os.path.isfile(full):
                        found.append(full)
        elif os.path.isfile(path):
            found.append(path)
        else:
            missing.append(path)
    out = []
    for path in found:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            out.append({"path": path, "error": e.strerror or str(e)})
            continue
        out.append({"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "text": data.decode("utf-8", errors="replace")})
    return out, missing


class World:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.path = os.path.join(cfg.data_dir, "worlds", cfg.world_name)
        self.meta_path = os.path.join(self.path, "meta.json")
        self.db_path = os.path.join(self.path, "world.db")
        self.players_dir = os.path.join(self.path, "players")
        self.saves_dir = os.path.join(self.path, "saves")
        self.save_path = os.path.join(self.saves_dir, "world.sav")
        self.meta: dict = {}
        self.created_now = False
        self.loaded_save = None
        self.loaded_ticks = 0  # the world's age when this process loaded it
        self.saving = True     # False after `save-off`: the world changes in memory only
        self.pending: list[str] = []  # ticks not yet on disk (saving off)

    def open(self) -> None:
        try:
            os.makedirs(self.path, exist_ok=True)
            # A probe write: a world folder that exists but is read-only fails here, not later.
            probe = os.path.join(self.path, f".probe.{os.getpid()}")
            with open(probe, "wb"):
                pass
            os.unlink(probe)
            if os.path.exists(self.meta_path):
                self._load()
            else:
                self._create()
            os.makedirs(self.players_dir, exist_ok=True)
            os.makedirs(self.saves_dir, exist_ok=True)
            self.meta["last_version"] = self.cfg.version
            self.meta["last_started"] = now_iso()
            self.write_meta()
        except PermissionError as e:
            raise Fatal(f"cannot write the world at {self.cfg.data_dir}: {e.strerror}")
        except OSError as e:
            raise Fatal(f"cannot write the world at {self.cfg.data_dir}: {e.strerror or e}")

    def _create(self) -> None:
        self.created_now = True
        self.meta = {"world_id": uuid.uuid4().hex, "name": self.cfg.world_name,
                     "created": now_iso(), "version": self.cfg.version, "ticks": 0}

    def _load(self) -> None:
        try:
            with open(self.meta_path, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("world_id"), str):
                raise ValueError("no world_id")
            meta["ticks"] = int(meta.get("ticks", 0))
        except (ValueError, UnicodeDecodeError) as e:
            raise Fatal(f"the world at {self.path} is corrupt (meta.json: {e})")
        self.meta = meta
        self.loaded_ticks = meta["ticks"]
        try:
            with open(self.save_path, "rb") as f:
                self.loaded_save = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, UnicodeDecodeError):
            self.loaded_save = {"error": "unreadable"}

    @property
    def world_id(self) -> str:
        return self.meta["world_id"]

    @property
    def ticks(self) -> int:
        return self.meta["ticks"]

    def write_meta(self) -> None:
        write_json(self.meta_path, self.meta, sync=True)

    def tick(self) -> None:
        self.meta["ticks"] += 1
        self.meta["last_version"] = self.cfg.version
        stamp = now_iso()
        self.meta["last_tick"] = stamp
        self.pending.append(f"tick {self.meta['ticks']} {stamp}\n")
        if self.saving:
            self.flush()

    def flush(self) -> None:
        """Write what changed in memory: the ticks appended to the database, then meta."""
        if self.pending:
            with open(self.db_path, "a", encoding="ascii") as f:
                f.write("".join(self.pending))
                f.flush()
                os.fsync(f.fileno())
            self.pending = []
        self.write_meta()

    def player_joined(self, name: str) -> None:
        path = os.path.join(self.players_dir, f"{name}.json")
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read().decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError
        except (OSError, ValueError, UnicodeDecodeError):
            record = {"name": name, "first_joined": now_iso(), "joins": 0}
        record["joins"] = int(record.get("joins", 0)) + 1
        record["last_joined"] = now_iso()
        record["world_id"] = self.world_id
        write_json(path, record)

    def save(self, players: list[str], reason: str) -> None:
        self.meta["last_saved"] = now_iso()
        self.flush()
        write_json(self.save_path, {"world_id": self.world_id, "ticks": self.ticks,
                                    "players": players, "saved": now_iso(), "reason": reason,
                                    "version": self.cfg.version}, sync=True)


class Challenges:
    """A2S challenges per client address: random 4-byte values, any recent one is accepted."""

    def __init__(self) -> None:
        self.by_addr: dict[tuple, list[tuple[bytes, float]]] = {}

    def issue(self, addr: tuple) -> bytes:
        now = time.monotonic()
        issued = [(c, t) for c, t in self.by_addr.get(addr, []) if now - t < CHALLENGE_TTL]
        if issued and now - issued[-1][1] < CHALLENGE_REUSE:
            return issued[-1][0]
        while True:
            challenge = os.urandom(4)
            # 0 makes clients send no challenge at all; FFFFFFFF means "give me a challenge".
            if challenge not in (b"\x00" * 4, b"\xff" * 4):
                break
        issued.append((challenge, now))
        self.by_addr.pop(addr, None)
        self.by_addr[addr] = issued[-4:]
        while len(self.by_addr) > MAX_CLIENTS:
            del self.by_addr[next(iter(self.by_addr))]
        return challenge

    def valid(self, addr: tuple, challenge: bytes) -> bool:
        now = time.monotonic()
        return any(hmac.compare_digest(c, challenge) and now - t < CHALLENGE_TTL
                   for c, t in self.by_addr.get(addr, []))


def cstr(text: str) -> bytes:
    return text.replace("\x00", "").encode("utf-8") + b"\x00"


class Server:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.world = World(cfg)
        self.players: dict[str, float] = {}  # name -> monotonic join time
        self.joined_at: dict[str, str] = {}
        self.challenges = Challenges()
        self.started = now_iso()
        self.stop_signal: str | None = None
        self.config_files: list[dict] = []
        self.config_missing: list[str] = []
        self._report_failed = False
        self.console_log: list[dict] = []

    # ---- start-up -------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self.config_files, self.config_missing = read_config(cfg.config_paths)
        log(f"version {cfg.version} starting")
        log(f"read {len(self.config_files)} config file(s)")
        self.world.open()
        if self.world.created_now:
            log(f"world {cfg.world_name} created (id {self.world.world_id})")
        else:
            log(f"world {cfg.world_name} loaded (id {self.world.world_id}, ticks {self.world.ticks})")
        self.game_sock = self._bind(cfg.game_port, "game")
        self.query_sock = self._bind(cfg.query_port, "query")
        self.console_sock = self._bind_console()
        self.rcon = Rcon(self, cfg.bind, cfg.rcon_port, cfg.rcon_password) \
            if cfg.rcon_port and cfg.rcon_password else None
        self.minecraft = Minecraft(self, cfg.bind, cfg.minecraft_port) \
            if cfg.minecraft_port else None
        try:
            os.makedirs(os.path.dirname(cfg.state) or ".", exist_ok=True)
            self.write_report("running", strict=True)
        except OSError as e:
            raise Fatal(f"cannot write the report at {cfg.state}: {e.strerror or e}")
        log(f"listening on udp {cfg.game_port} (game) and udp {cfg.query_port} (query)")

    def _bind(self, port: int, what: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.cfg.bind, port))
        except OSError as e:
            sock.close()
            raise Fatal(f"cannot bind the {what} port udp {port}: {e.strerror or e}")
        sock.setblocking(False)
        return sock

    def _bind_console(self) -> socket.socket:
        path = console_path()
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)  # left by a process before this one
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            os.chmod(path, 0o600)
        except OSError as e:
            raise Fatal(f"cannot open the console socket {path}: {e.strerror or e}")
        sock.setblocking(False)
        return sock

    def on_console(self, data: bytes) -> bytes:
        command = data.decode("utf-8", errors="replace").strip()
        if command == "save-off":
            self.world.saving = False
        elif command == "save-on":
            self.world.saving = True
        elif command == "save-all":
            self.world.save(list(self.players), "save-all")
        elif command.startswith("say "):
            log(f"[server] {command[4:]}")
        elif command == "players":
            return (f"players ({len(self.players)}/{self.cfg.max_players}): "
                    + ", ".join(self.players)).encode()
        elif re.fullmatch(r"lines \d{1,5}", command):  # a long answer, for RCON's split packets
            return "\n".join(f"line {i}" for i in range(int(command[6:]))).encode()
        else:
            return f"ERR unknown command {command[:40]!r}".encode()
        self.console_log.append({"command": command, "at": now_iso(), "ticks": self.world.ticks})
        log(f"console: {command}")
        self.write_report()
        return b"OK " + command.encode()

    # ---- report ---------------------------------------------------------------------------

    def report(self, state: str) -> dict:
        cfg, world = self.cfg, self.world
        now = time.monotonic()
        return {
            "state": state,
            "version": cfg.version,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": sorted(os.getgroups()),
            "started": self.started,
            "updated": now_iso(),
            "server": {"name": cfg.server_name, "world": cfg.world_name,
                       "max_players": cfg.max_players, "password_set": bool(cfg.password),
                       "game_port": cfg.game_port, "query_port": cfg.query_port,
                       "bind": cfg.bind, "data_dir": cfg.data_dir, "tick": cfg.tick},
            "world": {"id": world.world_id, "path": world.path, "created_now": world.created_now,
                      "created": world.meta.get("created"),
                      "created_version": world.meta.get("version"),
                      "ticks": world.ticks, "loaded_ticks": world.loaded_ticks,
                      "loaded_save": world.loaded_save, "saving": world.saving},
            "console": self.console_log[-50:],
            "players": [{"name": n, "joined": self.joined_at[n], "seconds": round(now - t, 3)}
                        for n, t in self.players.items()],
            "config": {"paths": cfg.config_paths, "files": self.config_files,
                       "missing": self.config_missing},
            "env": dict(os.environ),
            "stop_signal": self.stop_signal,
        }

    def write_report(self, state: str = "running", strict: bool = False) -> None:
        try:
            # 0600: the report holds the whole environment, the password included.
            write_json(self.cfg.state, self.report(state), mode=0o600)
            self._report_failed = False
        except OSError as e:
            if strict:
                raise
            if not self._report_failed:
                log(f"cannot write the report: {e.strerror or e}")
            self._report_failed = True

    # ---- game port ------------------------------------------------------------------------

    def on_game(self, data: bytes) -> bytes:
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return b"ERR"
        parts = text.split(" ", 2)
        command = parts[0].upper()
        if command == "PING" and len(parts) == 1:
            return f"PONG {self.cfg.version} {self.world.world_id}".encode()
        if command not in ("JOIN", "LEAVE") or len(parts) < 2 or not NAME_RE.fullmatch(parts[1]):
            return b"ERR"
        name = parts[1]
        if command == "LEAVE":
            if len(parts) > 2:
                return b"ERR"
            if self.players.pop(name, None) is not None:
                self.joined_at.pop(name, None)
                log(f"player {name} left ({len(self.players)} online)")
                self.write_report()
            return f"BYE {name}".encode()
        given = parts[2] if len(parts) > 2 else ""
        if self.cfg.password and not hmac.compare_digest(given.encode(), self.cfg.password.encode()):
            log(f"player {name} denied (wrong password)")
            return b"DENIED"
        if name not in self.players:
            if len(self.players) >= self.cfg.max_players:
                log(f"player {name} refused (server full)")
                return b"FULL"
            self.players[name] = time.monotonic()
            self.joined_at[name] = now_iso()
            try:
                self.world.player_joined(name)
            except OSError as e:
                log(f"cannot write player {name}: {e.strerror or e}")
            log(f"player {name} joined ({len(self.players)} online)")
            self.write_report()
        return f"WELCOME {name}".encode()

    # ---- query port (Steam A2S) -----------------------------------------------------------

    def on_query(self, data: bytes, addr: tuple) -> bytes | None:
        if len(data) < 5 or data[:4] != HEADER:
            return None
        kind, body = data[4], data[5:]
        if kind == A2S_INFO:
            if not body.startswith(INFO_QUERY):
                return None
            challenge = body[len(INFO_QUERY):]
            if len(challenge) != 4 or not self.challenges.valid(addr, challenge):
                return HEADER + b"\x41" + self.challenges.issue(addr)
            return self.info_packet()
        if kind in (A2S_PLAYER, A2S_RULES):
            challenge = body[:4]
            if len(challenge) != 4 or challenge == HEADER or not self.challenges.valid(addr, challenge):
                return HEADER + b"\x41" + self.challenges.issue(addr)
            return self.players_packet() if kind == A2S_PLAYER else self.rules_packet()
        if kind == A2S_GETCHALLENGE:
            return HEADER + b"\x41" + self.challenges.issue(addr)
        return None

    def info_packet(self) -> bytes:
        cfg = self.cfg
        return (HEADER + b"\x49" + bytes([17]) + cstr(cfg.server_name) + cstr(cfg.world_name)
                + cstr("testgame") + cstr("Peon Test Game") + struct.pack("<h", 0)
                + bytes([min(len(self.players), 255), cfg.max_players, 0])
                + b"dl" + bytes([1 if cfg.password else 0, 0])
                + cstr(cfg.version) + bytes([0x80]) + struct.pack("<H", cfg.game_port))

    def players_packet(self) -> bytes:
        now = time.monotonic()
        entries = []
        size = 6
        for index, (name, joined) in enumerate(self.players.items()):
            entry = bytes([index % 256]) + cstr(name) + struct.pack("<lf", 0, now - joined)
            if size + len(entry) > MAX_PACKET:  # one datagram; never split
                break
            entries.append(entry)
            size += len(entry)
        return HEADER + b"\x44" + bytes([len(entries)]) + b"".join(entries)

    def rules_packet(self) -> bytes:
        rules = {"world_id": self.world.world_id, "version": self.cfg.version}
        return (HEADER + b"\x45" + struct.pack("<h", len(rules))
                + b"".join(cstr(k) + cstr(v) for k, v in rules.items()))

    # ---- main loop ------------------------------------------------------------------------

    def catch_signals(self) -> None:
        """SIGTERM/SIGINT only set a flag; the wake-up socket makes the select return at once,
        however long the tick. Installed before start-up so an early SIGTERM still saves."""
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)

        def on_signal(signum, _frame):
            self.stop_signal = signal.Signals(signum).name

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        wake_r = self.wake_r
        sel = selectors.DefaultSelector()
        sel.register(self.game_sock, selectors.EVENT_READ, "game")
        sel.register(self.query_sock, selectors.EVENT_READ, "query")
        sel.register(self.console_sock, selectors.EVENT_READ, "console")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        if self.rcon:
            self.rcon.attach(sel)
        if self.minecraft:
            self.minecraft.attach(sel)
        next_tick = time.monotonic() + self.cfg.tick
        while self.stop_signal is None:
            timeout = max(0.0, next_tick - time.monotonic())
            for key, _ in sel.select(timeout):
                if key.data == "wake":
                    try:
                        while wake_r.recv(512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                    continue
                if callable(key.data):  # an RCON socket: its own handler
                    key.data()
                    continue
                self._drain(key.fileobj, key.data)
            if self.stop_signal is not None:
                break
            if time.monotonic() >= next_tick:
                try:
                    self.world.tick()
                except OSError as e:
                    log(f"cannot write the world: {e.strerror or e}")
                self.write_report()
                next_tick += self.cfg.tick
                if next_tick < time.monotonic():  # fell behind (suspended?): don't burst
                    next_tick = time.monotonic() + self.cfg.tick
        return self.shutdown()

    def _drain(self, sock: socket.socket, which: str) -> None:
        for _ in range(64):  # bounded, so ticks still happen under a flood
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable reported on a UDP socket
                continue
            if which == "console":
                try:
                    reply = self.on_console(data)
                except OSError as e:
                    reply = f"ERR {e.strerror or e}".encode()
            else:
                reply = self.on_game(data) if which == "game" else self.on_query(data, addr)
            if reply is not None:
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    pass

    def shutdown(self) -> int:
        reason = self.stop_signal or "exit"
        code = 0
        try:
            self.world.save(list(self.players), reason)
            log(f"saved on {reason}")
        except OSError as e:
            log(f"could not save on {reason}: {e.strerror or e}")
            code = 1
        self.write_report("stopped")
        for sock in (self.game_sock, self.query_sock, self.console_sock):
            sock.close()
        return code


class Rcon:
    """Source RCON on TCP: AUTH (3) with the password, then EXECCOMMAND (2) runs a console
    command (the same ones as `testgame console`, plus `say TEXT`, `players`, `lines N`);
    answers longer than 4096 bytes go in several RESPONSE_VALUE (0) packets, and an empty
    RESPONSE_VALUE is mirrored back, as Source servers do. A wrong password gets id -1."""

    MAX_CONNECTIONS = 16

    def __init__(self, server: "Server", bind: str, port: int, password: str):
        self.server, self.password = server, password.encode()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((bind, port))
        except OSError as e:
            self.listener.close()
            raise Fatal(f"cannot bind the RCON port tcp {port}: {e.strerror or e}")
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.sel: selectors.BaseSelector | None = None
        self.conns: dict[socket.socket, dict] = {}
        log(f"rcon on tcp {port}")

    def attach(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        sel.register(self.listener, selectors.EVENT_READ, self.accept)

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if len(self.conns) >= self.MAX_CONNECTIONS:
            conn.close()
            return
        conn.setblocking(True)
        conn.settimeout(2.0)
        self.conns[conn] = {"buf": b"", "authed": False}
        self.sel.register(conn, selectors.EVENT_READ, lambda: self.read(conn))

    def drop(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        self.conns.pop(conn, None)
        conn.close()

    @staticmethod
    def packet(packet_id: int, kind: int, body: bytes) -> bytes:
        payload = struct.pack("<ii", packet_id, kind) + body + b"\x00\x00"
        return struct.pack("<i", len(payload)) + payload

    def read(self, conn: socket.socket) -> None:
        state = self.conns[conn]
        try:
            data = conn.recv(8192)
        except OSError:
            data = b""
        if not data:
            return self.drop(conn)
        state["buf"] += data
        try:
            while len(state["buf"]) >= 4:
                (size,) = struct.unpack_from("<i", state["buf"])
                if not 10 <= size <= 4106:
                    return self.drop(conn)
                if len(state["buf"]) < 4 + size:
                    return
                payload, state["buf"] = state["buf"][4:4 + size], state["buf"][4 + size:]
                packet_id, kind = struct.unpack_from("<ii", payload)
                conn.sendall(self.answer(state, packet_id, kind, payload[8:].rstrip(b"\x00")))
        except OSError:
            self.drop(conn)

    def answer(self, state: dict, packet_id: int, kind: int, body: bytes) -> bytes:
        if kind == 3:  # AUTH
            state["authed"] = hmac.compare_digest(body, self.password)
            log("rcon: login " + ("accepted" if state["authed"] else "refused"))
            return self.packet(packet_id, 0, b"") + \
                self.packet(packet_id if state["authed"] else -1, 2, b"")
        if not state["authed"]:
            return self.packet(-1, 2, b"")
        if kind == 2:  # EXECCOMMAND
            out = self.server.on_console(body)
            if out.startswith(b"OK "):
                out = out[3:]
            return b"".join(self.packet(packet_id, 0, out[i:i + 4096])
                            for i in range(0, max(len(out), 1), 4096))
        return self.packet(packet_id, 0, b"")  # RESPONSE_VALUE: mirrored


class Minecraft:
    """The Minecraft Java server-list ping (handshake, status request, ping) and login (Login
    Start -> Login Success with the player's name, who is then on), bounded: packets of at most
    MAX_PACKET bytes, 16 connections, 2 s to send each packet."""

    MAX_CONNECTIONS = 16
    MAX_PACKET = 2048
    PROTOCOL = 767  # 1.21

    def __init__(self, server: "Server", bind: str, port: int):
        self.server = server
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((bind, port))
        except OSError as e:
            self.listener.close()
            raise Fatal(f"cannot bind the Minecraft port tcp {port}: {e.strerror or e}")
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.sel: selectors.BaseSelector | None = None
        self.conns: dict[socket.socket, dict] = {}
        log(f"minecraft on tcp {port}")

    def attach(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        sel.register(self.listener, selectors.EVENT_READ, self.accept)

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if len(self.conns) >= self.MAX_CONNECTIONS:
            conn.close()
            return
        conn.settimeout(2.0)
        self.conns[conn] = {"buf": b"", "state": 0}
        self.sel.register(conn, selectors.EVENT_READ, lambda: self.read(conn))

    def drop(self, conn: socket.socket) -> None:
        self.sel.unregister(conn)
        self.conns.pop(conn, None)
        conn.close()

    @staticmethod
    def varint(n: int) -> bytes:
        n &= 0xFFFFFFFF
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    @staticmethod
    def read_varint(data: bytes, at: int):
        n = 0
        for i in range(5):
            if at + i >= len(data):
                return None
            b = data[at + i]
            n |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return n, at + i + 1
        raise ValueError("varint")

    def packet(self, packet_id: int, body: bytes) -> bytes:
        data = self.varint(packet_id) + body
        return self.varint(len(data)) + data

    def string(self, text: str) -> bytes:
        raw = text.encode()
        return self.varint(len(raw)) + raw

    def read(self, conn: socket.socket) -> None:
        state = self.conns[conn]
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            return self.drop(conn)
        state["buf"] += data
        try:
            while True:
                head = self.read_varint(state["buf"], 0)
                if head is None:
                    return
                length, at = head
                if not 1 <= length <= self.MAX_PACKET:
                    return self.drop(conn)
                if len(state["buf"]) < at + length:
                    return
                body, state["buf"] = state["buf"][at:at + length], state["buf"][at + length:]
                reply, close = self.answer(state, body)
                if reply:
                    conn.sendall(reply)
                if close:
                    return self.drop(conn)
        except (OSError, ValueError, UnicodeDecodeError, IndexError):
            self.drop(conn)

    def answer(self, state: dict, body: bytes) -> tuple[bytes, bool]:
        packet_id, at = self.read_varint(body, 0)
        cfg = self.server.cfg
        if state["state"] == 0 and packet_id == 0:  # handshake: protocol, address, port, next
            _, at = self.read_varint(body, at)
            size, at = self.read_varint(body, at)
            at += size + 2
            state["state"], _ = self.read_varint(body, at)
            return b"", state["state"] not in (1, 2)
        if state["state"] == 1 and packet_id == 0:
            status = {"version": {"name": f"testgame {cfg.version}", "protocol": self.PROTOCOL},
                      "players": {"max": cfg.max_players, "online": len(self.server.players)},
                      "description": {"text": cfg.server_name}}
            return self.packet(0, self.string(json.dumps(status))), False
        if state["state"] == 1 and packet_id == 1:
            return self.packet(1, body[at:at + 8]), True
        if state["state"] == 2 and packet_id == 0:  # Login Start: the name (then a UUID)
            size, at = self.read_varint(body, at)
            name = body[at:at + size].decode("utf-8")
            if not NAME_RE.fullmatch(name):
                return b"", True
            self.server.players.setdefault(name, time.monotonic())
            log(f"player {name} logged in over minecraft ({len(self.server.players)} online)")
            player_id = uuid.uuid3(uuid.NAMESPACE_OID, f"OfflinePlayer:{name}").bytes
            return self.packet(2, player_id + self.string(name) + self.varint(0)), True
        return b"", True


def serve() -> int:
    try:
        server = Server(Config())
        server.catch_signals()
        server.start()
    except Fatal as e:
        print(f"testgame: {e}", file=sys.stderr, flush=True)
        return e.code
    return server.run()


def report() -> int:
    try:
        with open(state_path(), "rb") as f:
            data = f.read()
    except OSError as e:
        print(f"testgame: no report at {state_path()}: {e.strerror or e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def console(command: str) -> int:
    """Send one console command to the running server and print its answer (an rcon-cli)."""
    me = os.path.join(os.path.dirname(console_path()) or ".", f".client.{os.getpid()}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(me)
            sock.settimeout(10)
            sock.sendto(command.encode(), console_path())
            answer = sock.recv(4096).decode("utf-8", errors="replace")
        except OSError as e:
            print(f"testgame: no server answers on {console_path()}: {e.strerror or e}",
                  file=sys.stderr)
            return 1
        finally:
            try:
                os.unlink(me)
            except OSError:
                pass
    print(answer)
    return 0 if answer.startswith("OK") else 1


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    if command == "serve" and len(argv) <= 2:
        return serve()
    if command == "report" and len(argv) == 2:
        return report()
    if command == "console" and len(argv) == 3:
        return console(argv[2])
    if command in ("version", "--version") and len(argv) == 2:
        print(version())
        return 0
    print("usage: testgame [serve|report|version|console COMMAND]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
