"""Typed views of Game and GameServer objects, parsed and checked once.

The CRD schemas and CEL rules reject most bad input at admission. What they cannot see
(a value's type inside free-form `content`, a required variable that lives in a Secret, two
settings aiming at one file) is checked here and raised as `InvalidSpec`, which the operator
turns into a status condition and an Event.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from kubernetes.utils import parse_quantity

from . import backup as bk, clock, maintenance as mt, notify as nt, players as pl, uptime as up

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def is_env_name(k: str) -> bool:
    """A name that can be both an environment variable and a Secret's key (which refuses "."
    and ".." and names over 253 characters): the one rule, for inline settings and for the
    keys of a Secret named by secretRef."""
    return bool(ENV_NAME.match(k)) and k not in (".", "..") and len(k) <= 253
FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

STATE_RUNNING = "Running"
STATE_STOPPED = "Stopped"


class InvalidSpec(Exception):
    """A GameServer that cannot be built as written. `reason` is a CamelCase word for the
    condition and Event; the message tells the user what to change."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Port:
    name: str
    container_port: int
    protocol: str = "UDP"


@dataclass(frozen=True)
class GameEnv:
    name: str
    default: str | None = None
    required: bool = False
    secret: bool = False
    # Other names a setting may give it by (PEON's plans said PASSWORD where an image reads
    # SERVER_PASS); the value is passed on with Kubernetes' own $(NAME) expansion.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    protocol: str = "none"  # a2s | minecraft | quake3 | log | none
    port: str | None = None  # name of the port to ask
    log: pl.LogRules | None = None  # protocol log: the lines a join and a leave print


CONNECT_PROTOCOLS = {"minecraft": "TCP", "quake3": "UDP", "a2s": "UDP", "generic": None}


@dataclass(frozen=True)
class Connect:
    """How players' clients join (the wake gate's rule, issue 25): on which port, speaking what.
    None: the generic rule (every port but the query port takes a join)."""
    port: str | None = None
    protocol: str = "generic"  # minecraft | quake3 | a2s (a Steam game) | generic


@dataclass(frozen=True)
class Scheduling:
    """Where a server's pod may run. None means "not given", so a GameServer's field replaces
    its Game's default one field at a time."""
    node_selector: Mapping[str, str] | None = None
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    affinity: Mapping[str, Any] | None = None
    priority_class_name: str | None = None

    def over(self, default: "Scheduling") -> "Scheduling":
        """This scheduling, with `default`'s value for every field this one does not give."""
        return Scheduling(*(mine if mine is not None else theirs for mine, theirs in zip(
            (self.node_selector, self.tolerations, self.affinity, self.priority_class_name),
            (default.node_selector, default.tolerations, default.affinity,
             default.priority_class_name))))

    def pod_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.node_selector:
            out["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            out["tolerations"] = [dict(t) for t in self.tolerations]
        if self.affinity:
            out["affinity"] = dict(self.affinity)
        if self.priority_class_name:
            out["priorityClassName"] = self.priority_class_name
        return out


def parse_scheduling(spec: Mapping[str, Any] | None) -> Scheduling:
    spec = spec or {}
    tol = spec.get("tolerations")
    return Scheduling(spec.get("nodeSelector"), tuple(tol) if tol is not None else None,
                      spec.get("affinity"), spec.get("priorityClassName"))


@dataclass(frozen=True)
class BackupHooks:
    """Commands run in a running server's container around its backup (consistent saves)."""
    before: tuple[tuple[str, ...], ...] = ()
    after: tuple[tuple[str, ...], ...] = ()
    timeout_seconds: int = 60

    def __bool__(self) -> bool:
        return bool(self.before or self.after)


def parse_backup_hooks(spec: Mapping[str, Any] | None) -> BackupHooks:
    spec = spec or {}
    return BackupHooks(tuple(tuple(h["command"]) for h in spec.get("before") or ()),
                       tuple(tuple(h["command"]) for h in spec.get("after") or ()),
                       int(spec.get("timeoutSeconds", 60)))


DEFAULT_GRACE_SECONDS = 60


@dataclass(frozen=True)
class Game:
    uid: str
    image: str
    ports: tuple[Port, ...]
    data_path: str
    config_path: str
    title: str = ""
    env: tuple[GameEnv, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # setting name -> absolute path
    resources: Mapping[str, Any] = field(default_factory=dict)
    storage_size: str = "10Gi"
    security_context: Mapping[str, Any] = field(default_factory=dict)
    readiness_probe: Mapping[str, Any] | None = None
    query: Query = Query()
    connect: Connect = Connect()
    aliases: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    scheduling: Scheduling = Scheduling()
    termination_grace_seconds: int = DEFAULT_GRACE_SECONDS
    backup_hooks: BackupHooks = BackupHooks()
    console: mt.Console | None = None  # how to say something in the game (issue 28)


@dataclass(frozen=True)
class Setting:
    type: str  # env | json | txt
    name: str
    content: Any = None
    secret_ref: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Storage:
    size: str | None = None
    storage_class: str | None = None
    retain_on_delete: bool = True
    existing_claim: str | None = None
    recover_after: float | None = None  # seconds: a lost node's server moves (operator/lost_node.py)


@dataclass(frozen=True)
class Network:
    type: str = "LoadBalancer"  # LoadBalancer | NodePort | ClusterIP
    host_ports: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_ports: Mapping[str, int] = field(default_factory=dict)
    # Local keeps players' own addresses (the game's bans, the wake gate's per-source limit)
    # and serves the node port only on the node that runs the pod; None: Kubernetes' Cluster.
    external_traffic_policy: str | None = None


@dataclass(frozen=True)
class GameServer:
    namespace: str
    name: str
    uid: str
    generation: int
    game_uid: str
    server_name: str
    description: str = ""
    state: str = STATE_RUNNING
    image: str | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    storage: Storage = Storage()
    network: Network = Network()
    settings: tuple[Setting, ...] = ()
    restarted_at: str | None = None
    scheduling: Scheduling = Scheduling()
    backup: bk.Policy = bk.Policy()
    uptime: up.Policy = up.Policy()
    notify: nt.Policy | None = None
    maintenance: mt.Policy = mt.Policy()

    @property
    def env_settings(self) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.type == "env")

    @property
    def file_settings(self) -> tuple[Setting, ...]:
        return tuple(s for s in self.settings if s.type in ("json", "txt"))

    @property
    def secret_refs(self) -> tuple[str, ...]:
        return tuple(s.secret_ref for s in self.env_settings if s.secret_ref)


def check_game(uid: str, spec: Mapping[str, Any]) -> None:
    """What a Game's schema lets through but no pod could be built from; each server of the
    Game then says which Game field is wrong."""
    where = f"Game {uid}: spec"
    try:
        check_resources(spec.get("resources") or {}, f"{where}.resources")
    except InvalidSpec as e:
        raise InvalidSpec("InvalidGame", e.message) from None
    for k in ("runAsUser", "runAsGroup", "fsGroup"):
        v = (spec.get("securityContext") or {}).get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise InvalidSpec("InvalidGame", f"{where}.securityContext.{k} must be a number "
                              f"(a uid or gid such as 1000), not {v!r}")
    for k in ("command", "args"):
        v = spec.get(k)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise InvalidSpec("InvalidGame", f"{where}.{k} must be a list of strings")
    data = str(spec.get("dataPath", "")).rstrip("/")
    for f in spec.get("files") or []:
        if str(f.get("path", "")).rstrip("/") == data:
            raise InvalidSpec("InvalidGame", f"{where}.files: {f.get('name')!r} is mounted at the "
                              "data path itself, which would hide the world")
    wrong = mt.check_console(mt.parse_console(spec.get("console")),
                             {p.get("name"): p.get("protocol", "UDP") for p in spec.get("ports") or []})
    if wrong:
        raise InvalidSpec("InvalidGame", f"{where}.{wrong}")
    q = spec.get("query") or {}
    if q.get("protocol") == "log" or q.get("log"):
        if q.get("protocol") != "log" or not isinstance(q.get("log"), dict):
            raise InvalidSpec("InvalidGame", f"{where}.query: protocol log and query.log go "
                              "together (the log lines a join and a leave print)")
        wrong = pl.log_rules_problem(log_rules(q["log"]))
        if wrong:
            raise InvalidSpec("InvalidGame", f"{where}.query.log: {wrong}")
    c = spec.get("connect") or {}
    if c:
        ports = {p.get("name"): p.get("protocol", "UDP") for p in spec.get("ports") or []}
        proto = c.get("protocol", "generic")
        if c.get("port") not in ports or proto not in CONNECT_PROTOCOLS:
            raise InvalidSpec("InvalidGame", f"{where}.connect: port {c.get('port')!r} is not one "
                              f"of the Game's ports, or protocol {proto!r} is unknown")
        if CONNECT_PROTOCOLS[proto] not in (None, ports[c["port"]]):
            raise InvalidSpec("InvalidGame", f"{where}.connect: {proto} is spoken over "
                              f"{CONNECT_PROTOCOLS[proto]}, port {c['port']!r} is {ports[c['port']]}")


def log_rules(spec: Mapping[str, Any]) -> pl.LogRules:
    return pl.LogRules(*(v if isinstance(v := spec.get(k), str) and v else None
                         for k in ("join", "leave", "count")))


def parse_game(obj: Mapping[str, Any]) -> Game:
    spec = obj.get("spec") or {}
    check_game(obj["metadata"]["name"], spec)
    q = spec.get("query") or {}
    return Game(
        uid=obj["metadata"]["name"],
        title=spec.get("title", ""),
        image=spec["image"],
        ports=tuple(Port(p["name"], int(p["containerPort"]), p.get("protocol", "UDP"))
                    for p in spec.get("ports") or []),
        data_path=spec["dataPath"],
        config_path=spec.get("configPath") or spec["dataPath"],
        env=tuple(GameEnv(e["name"], e.get("default"), bool(e.get("required", False)),
                          bool(e.get("secret", False)), tuple(e.get("aliases", [])))
                  for e in spec.get("env", [])),
        files={f["name"]: f["path"] for f in spec.get("files", [])},
        resources=spec.get("resources") or {},
        storage_size=(spec.get("storage") or {}).get("size", "10Gi"),
        security_context=spec.get("securityContext") or {},
        readiness_probe=spec.get("readinessProbe"),
        query=Query(q.get("protocol", "none"), q.get("port"),
                    log_rules(q["log"]) if q.get("protocol") == "log" else None),
        connect=Connect((spec.get("connect") or {}).get("port"),
                        (spec.get("connect") or {}).get("protocol", "generic")),
        aliases=tuple(spec.get("aliases", [])),
        command=tuple(spec.get("command", [])),
        args=tuple(spec.get("args", [])),
        scheduling=parse_scheduling(spec.get("scheduling")),
        termination_grace_seconds=int(spec.get("terminationGracePeriodSeconds",
                                               DEFAULT_GRACE_SECONDS)),
        backup_hooks=parse_backup_hooks(spec.get("backupHooks")),
        console=mt.parse_console(spec.get("console")),
    )


def parse_backup_policy(spec: Mapping[str, Any] | None) -> bk.Policy:
    try:
        policy = bk.parse_policy(spec)
        if policy.schedule:
            bk.schedule_slots(policy.schedule, policy.time_zone, clock.now())
    except (ValueError, KeyError, LookupError) as e:  # bad cron, zone or duration
        raise InvalidSpec("InvalidBackupPolicy", f"spec.backup: {e}") from e
    return policy


def parse_maintenance_policy(spec: Mapping[str, Any] | None) -> mt.Policy:
    try:
        return mt.parse_policy(spec, clock.now())
    except (ValueError, KeyError, LookupError) as e:  # bad cron, zone or duration
        raise InvalidSpec("InvalidMaintenance", f"spec.maintenance: {e}") from e


def parse_uptime_policy(spec: Mapping[str, Any] | None) -> up.Policy:
    try:
        return up.parse_policy(spec)
    except (ValueError, KeyError, LookupError) as e:
        raise InvalidSpec("InvalidUptimePolicy", f"spec.uptime: {e}") from e


RECOVER_AFTER = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_recover_after(text: Any) -> float | None:
    """spec.storage.recoverAfter (`30s`, `5m`, `1h30m`) in seconds; None when unset."""
    if text is None:
        return None
    m = RECOVER_AFTER.match(str(text))
    if not m or not any(m.groups()) or not sum(int(x or 0) for x in m.groups()):
        raise InvalidSpec("InvalidStorage", f"spec.storage.recoverAfter: {text!r} is not a "
                          "duration of at least 1s such as 30s, 5m or 1h")
    h, mi, s = (int(x or 0) for x in m.groups())
    return float(h * 3600 + mi * 60 + s)


def parse_gameserver(obj: Mapping[str, Any]) -> GameServer:
    """Parse and check what the CRD schema cannot. Raises InvalidSpec."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    settings = tuple(_parse_setting(s) for s in spec.get("settings", []))
    _check_unique_targets(settings)
    st, net = spec.get("storage") or {}, spec.get("network") or {}
    return GameServer(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation", 0)),
        game_uid=spec["gameUid"],
        server_name=spec.get("serverName") or meta["name"],
        description=spec.get("description", ""),
        state=spec.get("state", STATE_RUNNING),
        image=spec.get("image"),
        resources=check_resources(spec.get("resources") or {}, "spec.resources"),
        storage=Storage(st.get("size"), st.get("storageClassName"),
                        bool(st.get("retainOnDelete", True)), st.get("existingClaim"),
                        parse_recover_after(st.get("recoverAfter"))),
        network=Network(net.get("type", "LoadBalancer"), bool(net.get("hostPorts", False)),
                        net.get("annotations") or {}, net.get("nodePorts") or {},
                        net.get("externalTrafficPolicy")),
        settings=settings,
        restarted_at=(meta.get("annotations") or {}).get("peon.dev/restartedAt"),
        scheduling=parse_scheduling(spec.get("scheduling")),
        backup=parse_backup_policy(spec.get("backup")),
        uptime=parse_uptime_policy(spec.get("uptime")),
        notify=nt.parse_policy(spec.get("notify")),
        maintenance=parse_maintenance_policy(spec.get("maintenance")),
    )


def _parse_setting(s: Mapping[str, Any]) -> Setting:
    kind, name, content = s.get("type"), s.get("name", ""), s.get("content")
    ref = (s.get("secretRef") or {}).get("name")
    where = f"setting {name!r}"
    # content is free-form in the schema, so CEL cannot see it: these checks are the operator's.
    if kind == "env" and ref is not None and content is not None:
        raise InvalidSpec("InvalidSetting", f"{where}: an env setting has either content or "
                          "secretRef, not both (the content would be ignored)")
    if kind == "env":
        if ref is None:
            if not isinstance(content, Mapping):
                raise InvalidSpec("InvalidSetting", f"{where}: env content must be a map of "
                                  "variable names to strings")
            for k, v in content.items():
                # Keys become a Secret's keys too, which refuses "." and ".." and long names.
                if not is_env_name(k):
                    raise InvalidSpec("InvalidSetting", f"{where}: {k!r} is not a valid "
                                      "environment variable name")
                if not isinstance(v, str):
                    raise InvalidSpec("InvalidSetting", f"{where}: the value of {k} must be a "
                                      f"string (quote it in YAML), not {type(v).__name__}")
    elif kind == "json":
        if not isinstance(content, (Mapping, list)):
            raise InvalidSpec("InvalidSetting", f"{where}: json content must be an object or a list")
    elif kind == "txt":
        if not isinstance(content, str):
            raise InvalidSpec("InvalidSetting", f"{where}: txt content must be a string")
    else:
        raise InvalidSpec("InvalidSetting", f"{where}: type must be env, json or txt")
    if kind != "env" and (not FILE_NAME.match(name) or name in (".", "..")):
        raise InvalidSpec("InvalidSetting", f"{where}: a file setting's name must be a plain file "
                          "name; use `path` to place it elsewhere")
    return Setting(kind, name, content, ref, s.get("path"))


RESOURCE_NAMES = re.compile(r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMG]i|"
                            r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-A-Za-z0-9_.]+)$")


def quantity(value: Any, where: str) -> Decimal:
    """A Kubernetes quantity's value (the client's own parser); InvalidSpec for what the API
    server would refuse: not a quantity, negative, or padded with spaces."""
    try:
        if isinstance(value, bool) or str(value) != str(value).strip():
            raise ValueError(value)
        parsed = parse_quantity(value)
    except (ValueError, ArithmeticError):
        parsed = None
    if parsed is None or parsed < 0:
        raise InvalidSpec("InvalidResources", f"{where}: {value!r} is not a quantity (such as "
                          "500m, 2, 4Gi)")
    return parsed


def check_resources(resources: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """requests and limits: known resource names, quantities, requests not above limits."""
    if not isinstance(resources, Mapping):
        raise InvalidSpec("InvalidResources", f"{where} must be a map of requests and limits")
    unknown = set(resources) - {"requests", "limits"}
    if unknown:
        raise InvalidSpec("InvalidResources", f"{where}: only requests and limits, not "
                          f"{', '.join(sorted(unknown))}")
    parsed: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        for name, value in (resources.get(part) or {}).items():
            if not RESOURCE_NAMES.match(name):
                raise InvalidSpec("InvalidResources", f"{where}.{part}: {name!r} is not a "
                                  "resource name (cpu, memory, ephemeral-storage, ...)")
            parsed.setdefault(part, {})[name] = quantity(value, f"{where}.{part}.{name}")
    for name, req in parsed.get("requests", {}).items():
        lim = parsed.get("limits", {}).get(name)
        if lim is not None and req > lim:
            raise InvalidSpec("InvalidResources", f"{where}: the {name} request "
                              f"({resources['requests'][name]}) is above its limit "
                              f"({resources['limits'][name]})")
    return resources


def _check_unique_targets(settings: tuple[Setting, ...]) -> None:
    seen: dict[str, str] = {}
    for s in settings:
        if s.path:
            if s.path in seen:
                raise InvalidSpec("InvalidSetting", f"settings {seen[s.path]!r} and {s.name!r} "
                                  f"both write {s.path}")
            seen[s.path] = s.name
