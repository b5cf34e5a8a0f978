"""Friends' keys (pure): who may do what through `peon-api`, and how often a wrong key may be
tried.

The admin keeps the keys in a Secret (the chart's `api.friendsSecret`, mounted into the API's
pod; the kubelet brings an edit within about a minute, and the API reads the file again when
it changed). Its `keys.yaml` maps a friend's name to a key, a role and optionally the servers
that key reaches:

    alice: {key: 8c1f0e5a3d2b47e9a6c1, role: player, servers: [vikings]}
    bob:   {key: 0d9e7c6b5a4f3e2d1c0b, role: viewer}

Roles, each with the rights of the ones before: `viewer` (lists, a server, the page);
`player` (start, stop, restart, extend); `admin` (backups and their downloads, restore, logs,
create, destroy, descriptions, updates). The API's single key of old (`--api-key-file`,
PEON_API_KEY) is an admin of every server named `admin`.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Mapping

import yaml

VIEWER, PLAYER, ADMIN = "viewer", "player", "admin"
ROLES = (VIEWER, PLAYER, ADMIN)
PLAYER_ACTIONS = frozenset({"start", "stop", "restart", "extend"})
VIEWER_ACTIONS = frozenset({"get", "stats", "servers"})
MIN_KEY = 16
MAX_FILE = 256 * 1024  # a keys file past this is refused whole (a list of friends is small)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$")


class KeysFileError(ValueError):
    """The keys file as a whole cannot be read (not YAML, not a map, too large): the API
    keeps the keys it read before (a half-saved edit locks nobody out)."""


class Forbidden(Exception):
    """A key that may not do this (a server it does not reach for a create); the message
    says why."""


@dataclass(frozen=True)
class Friend:
    name: str
    role: str
    servers: frozenset[str] | None = None  # None: every server

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, name: str, uid: str | None = None) -> bool:
        """Whether this key reaches the server `name` (or `game.name`, `uid`)."""
        return self.servers is None or name in self.servers or (uid is not None and uid in self.servers)

    def describe(self) -> str:
        return f"{self.name} ({self.role})"


def digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key if isinstance(key, bytes) else key.encode()).digest()


class Keyring:
    """The keys the API accepts; `find` compares the given key with every one of them in
    constant time (sha256 digests of equal length, no early exit)."""

    def __init__(self, entries: list[tuple[bytes, Friend]]):
        self.entries = entries

    def find(self, given: str | bytes) -> Friend | None:
        want = digest(given)
        found = None
        for d, friend in self.entries:
            if hmac.compare_digest(d, want) and found is None:
                found = friend
        return found

    def __len__(self) -> int:
        return len(self.entries)


def admin_key(key: str) -> tuple[bytes, Friend]:
    return digest(key), Friend("admin", ADMIN)


def parse_keys(text: str | bytes) -> tuple[list[tuple[bytes, Friend]], list[str]]:
    """The friends of a keys.yaml, and a message for each entry refused (the rest are kept:
    one friend's typo locks nobody else out); KeysFileError when the file as a whole is
    not one. Messages never hold a key."""
    if len(text) > MAX_FILE:
        raise KeysFileError(f"the keys file holds more than {MAX_FILE} bytes")
    try:
        doc = yaml.safe_load(text) if text and text.strip() else {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise KeysFileError(f"the keys file is not YAML{at}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise KeysFileError("the keys file must map each friend's name to {key, role, servers}")
    out: list[tuple[bytes, Friend]] = []
    problems: list[str] = []
    seen: dict[bytes, str] = {}
    for name, entry in doc.items():
        name = str(name)
        shown = name if NAME.match(name) else repr(name[:40])
        if not NAME.match(name):
            problems.append(f"friend {shown}: a name is letters, digits, space and ._@- "
                            "(at most 63), starting with a letter or digit")
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"friend {shown}: give {{key, role}} (and servers, optionally)")
            continue
        unknown = set(entry) - {"key", "role", "servers"}
        if unknown:
            problems.append(f"friend {shown}: unknown fields {', '.join(sorted(map(str, unknown)))}")
            continue
        key, role, servers = entry.get("key"), entry.get("role", VIEWER), entry.get("servers")
        if not isinstance(key, str) or len(key.strip()) < MIN_KEY:
            problems.append(f"friend {shown}: the key must be a string of at least {MIN_KEY} "
                            "characters")
            continue
        if role not in ROLES:
            problems.append(f"friend {shown}: role must be one of {', '.join(ROLES)}, not "
                            f"{str(role)[:20]!r}")
            continue
        if servers is not None and (not isinstance(servers, list)
                                    or not all(isinstance(s, str) and s for s in servers)):
            problems.append(f"friend {shown}: servers must be a list of server names")
            continue
        d = digest(key.strip())
        if d in seen:
            problems.append(f"friends {seen[d]} and {shown} share a key: neither is used (who "
                            "did what must be known)")
            out = [(x, f) for x, f in out if x != d]
            continue
        seen[d] = shown
        out.append((d, Friend(name, role, frozenset(servers) if servers is not None else None)))
    return out, problems


def needed_role(method: str, path: str) -> str:
    """The least role a request needs: reads are a viewer's, start/stop/restart/extend a
    player's, everything else (backups, downloads, restore, logs, create, destroy,
    description, update, import) an admin's."""
    parts = [p for p in path.split("/") if p]
    action = None
    if len(parts) >= 2 and parts[0] == "page":
        action = parts[1]
    elif len(parts) >= 4 and parts[0] == "api" and parts[2] == "server":
        action = parts[3]
    if action is not None:
        if action in VIEWER_ACTIONS and method in ("GET", "HEAD"):
            return VIEWER
        if action in PLAYER_ACTIONS:
            return PLAYER
        return ADMIN
    return VIEWER if method in ("GET", "HEAD") else ADMIN


class Throttle:
    """Wrong keys per client address: at most `limit` within `window` seconds; then every key
    from that address is refused (429) until the oldest failure is `window` old, so guessing
    cannot go on. At most `addresses` addresses are remembered (the oldest go first)."""

    def __init__(self, limit: int = 10, window: float = 60, addresses: int = 10_000):
        self.limit, self.window, self.addresses = limit, window, addresses
        self.failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def wait(self, address: str, now: float) -> float:
        """Seconds until `address` may try a key again (0: now)."""
        times = self.failures.get(address)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[address]
            return 0.0
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def failed(self, address: str, now: float) -> None:
        times = self.failures.pop(address, None) or collections.deque(maxlen=self.limit)
        times.append(now)
        self.failures[address] = times  # the most recent last
        while len(self.failures) > self.addresses:
            self.failures.popitem(last=False)

