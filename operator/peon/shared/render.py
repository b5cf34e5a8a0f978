"""Pure rendering: a GameServer and its Game in, the child manifests out. No I/O here.

    GameServer ──┬─ Secret      <gs>-env     inline env settings
                 ├─ ConfigMap   <gs>-config  json settings serialised, txt verbatim
                 ├─ PVC         <gs>-data    the world (unless an existing claim is adopted)
                 ├─ Deployment  <gs>         one replica or zero, strategy Recreate
                 └─ Service     <gs>         the game's ports
"""
from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import backup as bk
from peon import ANNOTATION_RESTARTED_AT, ANNOTATION_SETTINGS_HASH, API_VERSION, LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from .model import STATE_RUNNING, Game, GameServer, InvalidSpec, Setting

CONTAINER = "server"


@dataclass(frozen=True)
class ReferencedSecrets:
    """What the renderer needs to know of the Secrets that env settings name by secretRef:
    their keys (for required variables) and a digest of their data (to roll on change).
    The values themselves never reach the renderer."""
    keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    digests: Mapping[str, str] = field(default_factory=dict)


def child_names(gs_name: str) -> dict[str, str]:
    return {"Secret": f"{gs_name}-env", "ConfigMap": f"{gs_name}-config",
            "PersistentVolumeClaim": f"{gs_name}-data", "Deployment": gs_name, "Service": gs_name}


def labels(gs: GameServer, game_uid: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": game_uid,
        "app.kubernetes.io/instance": gs.name,
        "app.kubernetes.io/component": "game-server",
        "app.kubernetes.io/part-of": "peon",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_GAMESERVER: gs.name,
    }


def owner_reference(gs: GameServer) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "GameServer", "name": gs.name, "uid": gs.uid,
            "controller": True, "blockOwnerDeletion": True}


def render(gs: GameServer, game: Game, secrets: ReferencedSecrets = ReferencedSecrets(),
           running: bool | None = None, helper_image: str | None = None) -> list[dict[str, Any]]:
    """Every child the GameServer should have, in the order they should be applied.
    `running` overrides spec.state (the uptime policy decides it); `helper_image` (the
    operator's own, which Jobs run) prepares the data volume; raises InvalidSpec."""
    if running is None:
        running = gs.state == STATE_RUNNING
    env_data = inline_env(gs)
    check_required_env(game, set(env_data) | {k for r in gs.secret_refs
                                                  for k in secrets.keys.get(r, ())})
    config_data = config_files(gs)
    check_file_paths(gs, game)
    check_size("Secret", env_data)
    check_size("ConfigMap", config_data)
    out: list[dict[str, Any]] = []
    if env_data:
        out.append(env_secret(gs, game, env_data))
    if config_data:
        out.append(config_map(gs, game, config_data))
    if not gs.storage.existing_claim:
        out.append(data_claim(gs, game))
    # The Service before the Deployment: a Service the API refuses (a node port taken) then
    # leaves no server running that players could not reach.
    if game.ports:
        out.append(service(gs, game))
    out.append(deployment(gs, game, env_data, config_data, secrets, running, helper_image))
    return out


def first_build_order(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order of a server's first build: the children the operator may delete again first,
    the world's claim (which it never deletes) last, so that a refusal anywhere can be taken
    back whole. A Deployment made a moment before its claim waits for it (its pod cannot be
    scheduled without it)."""
    return sorted(children, key=lambda c: c["kind"] == "PersistentVolumeClaim")


# --- settings ------------------------------------------------------------------------------------

def inline_env(gs: GameServer) -> dict[str, str]:
    """All inline env settings merged in order; a later setting wins, as in PEON."""
    data: dict[str, str] = {}
    for s in gs.env_settings:
        if s.secret_ref is None:
            data.update(s.content)
    return data


def check_required_env(game: Game, provided: set[str]) -> None:
    missing = [e.name for e in game.env if e.required and e.default is None
               and e.name not in provided and not provided.intersection(e.aliases)]
    if missing:
        raise InvalidSpec("MissingVariable", f"game {game.uid} requires {', '.join(missing)}: "
                          "add them to an env setting (inline or in the Secret named by secretRef)")


def config_files(gs: GameServer) -> dict[str, str]:
    return {s.name: (json.dumps(s.content, indent=2, sort_keys=True) + "\n"
                     if s.type == "json" else s.content)
            for s in gs.file_settings}


def file_path(s: Setting, game: Game) -> str:
    return s.path or game.files.get(s.name) or f"{game.config_path.rstrip('/')}/{s.name}"


# What the API server stores at most in one object (etcd's request limit is a little above).
OBJECT_LIMIT = 1024 * 1024
# Where a setting's file must never go: the kernel's and the runtime's own file systems, and
# the files that say who the users are.
SYSTEM_PATHS = ("/proc", "/sys", "/dev", "/etc/passwd", "/etc/shadow", "/etc/group",
                "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def check_file_paths(gs: GameServer, game: Game) -> None:
    """Each file setting gets its own mount path, outside the world's volume and the system's."""
    seen: dict[str, str] = {}
    data = game.data_path.rstrip("/") or "/"
    for s in gs.file_settings:
        target = posixpath.normpath(file_path(s, game))  # "/etc//passwd" is /etc/passwd
        # A file inside the world's folder is fine (Valheim reads /config/adminlist.txt there);
        # one mounted over the folder itself would hide the whole world.
        if target == data:
            raise InvalidSpec("InvalidSetting", f"setting {s.name!r}: {target} is the world's "
                              "own folder; a file mounted there would hide the world")
        if any(target == p or target.startswith(p + "/") for p in SYSTEM_PATHS):
            raise InvalidSpec("InvalidSetting", f"setting {s.name!r}: {target} is a system path; "
                              "choose one the game reads its configuration from")
        if target in seen:
            raise InvalidSpec("InvalidSetting", f"settings {seen[target]!r} and {s.name!r} both "
                              f"write {target}")
        seen[target] = s.name


def check_size(kind: str, data: Mapping[str, str]) -> None:
    """A Secret or ConfigMap over the API server's limit fails at apply; say so before."""
    size = sum(len(k) + len(v.encode()) for k, v in data.items())  # as stored, not base64
    if size > OBJECT_LIMIT - 16 * 1024:  # room for metadata
        raise InvalidSpec("TooLarge", f"the {kind} for the settings would hold {int(size)} bytes; "
                          f"Kubernetes stores at most {OBJECT_LIMIT} in one object: move large "
                          "files into the world's volume or an image")


def settings_hash(gs: GameServer, env_data: Mapping[str, str], config_data: Mapping[str, str],
                  secrets: ReferencedSecrets) -> str:
    """Changes whenever a setting's content changes, so the pod template changes and the
    server rolls. Salted with the object's uid: it must not let anyone guess a short password."""
    h = hashlib.sha256(gs.uid.encode())
    h.update(json.dumps([env_data, config_data, [(r, secrets.digests.get(r, ""))
                                                 for r in gs.secret_refs]], sort_keys=True).encode())
    return h.hexdigest()[:16]


# --- children ------------------------------------------------------------------------------------

def _meta(gs: GameServer, game: Game, kind: str, owned: bool = True) -> dict[str, Any]:
    m: dict[str, Any] = {"name": child_names(gs.name)[kind], "namespace": gs.namespace,
                         "labels": labels(gs, game.uid)}
    if owned:
        m["ownerReferences"] = [owner_reference(gs)]
    return m


def env_secret(gs: GameServer, game: Game, env_data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(gs, game, "Secret"),
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(env_data.items())}}


def config_map(gs: GameServer, game: Game, config_data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gs, game, "ConfigMap"),
            "data": dict(sorted(config_data.items()))}


def data_claim(gs: GameServer, game: Game) -> dict[str, Any]:
    # Without an owner reference the world outlives its GameServer (destroy keeps files);
    # retainOnDelete: false adds one, so the garbage collector removes it (eradicate).
    meta = _meta(gs, game, "PersistentVolumeClaim", owned=not gs.storage.retain_on_delete)
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": gs.storage.size or game.storage_size}}}
    if gs.storage.storage_class:
        spec["storageClassName"] = gs.storage.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def claim_name(gs: GameServer) -> str:
    return gs.storage.existing_claim or child_names(gs.name)["PersistentVolumeClaim"]


def deployment(gs: GameServer, game: Game, env_data: Mapping[str, str],
               config_data: Mapping[str, str], secrets: ReferencedSecrets,
               running: bool, helper_image: str | None = None) -> dict[str, Any]:
    names = child_names(gs.name)
    provided = set(env_data) | {k for r in gs.secret_refs for k in secrets.keys.get(r, ())}
    # Explicit env entries win over envFrom, so a game default is only set where the user gave
    # nothing. PEON_* come first so defaults can say "$(PEON_SERVER_NAME)".
    env = [{"name": "PEON_SERVER_NAME", "value": gs.server_name},
           {"name": "PEON_DESCRIPTION", "value": gs.description},
           {"name": "PEON_GAMESERVER", "value": gs.name}]
    for e in game.env:
        if e.name in provided:
            continue
        alias = next((a for a in e.aliases if a in provided), None)
        if alias:
            env.append({"name": e.name, "value": f"$({alias})"})
        elif e.default is not None:
            env.append({"name": e.name, "value": e.default})
    env_from = []
    if env_data:
        env_from.append({"secretRef": {"name": names["Secret"]}})
    env_from += [{"secretRef": {"name": r}} for r in gs.secret_refs]

    mounts = [{"name": "data", "mountPath": game.data_path}]
    mounts += [{"name": "config", "mountPath": file_path(s, game), "subPath": s.name,
                "readOnly": True} for s in gs.file_settings]
    volumes: list[dict[str, Any]] = [{"name": "data",
                                      "persistentVolumeClaim": {"claimName": claim_name(gs)}}]
    if config_data:
        volumes.append({"name": "config", "configMap": {"name": names["ConfigMap"]}})

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": gs.image or game.image,
        "ports": [_container_port(p, gs.network.host_ports) for p in game.ports],
        "env": env,
        "volumeMounts": mounts,
    }
    if env_from:
        container["envFrom"] = env_from
    if game.command:
        container["command"] = list(game.command)
    if game.args:
        container["args"] = list(game.args)
    resources = gs.resources or game.resources
    if resources:
        container["resources"] = dict(resources)
    if game.readiness_probe:
        container["readinessProbe"] = dict(game.readiness_probe)

    annotations = {ANNOTATION_SETTINGS_HASH: settings_hash(gs, env_data, config_data, secrets)}
    if gs.restarted_at:
        annotations[ANNOTATION_RESTARTED_AT] = gs.restarted_at
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # Service links would inject variables such as <NAME>_PORT that collide with games'
        # own PORT-style settings.
        "enableServiceLinks": False,
        # Game servers save the world on SIGTERM; give them time to.
        "terminationGracePeriodSeconds": game.termination_grace_seconds,
    }
    if game.security_context:
        pod_spec["securityContext"] = dict(game.security_context)
    # The seed first: the owner step then gives the restored world's top folder to the game.
    init = [c for c in (seed_container(gs, helper_image), volume_owner(game, helper_image)) if c]
    if init:
        pod_spec["initContainers"] = init
    if any(c["name"] == SEED_CONTAINER for c in init):
        volumes.append({"name": "seed-tmp", "emptyDir": {}})
    pod_spec.update(gs.scheduling.over(game.scheduling).pod_fields())
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(gs, game, "Deployment"),
        "spec": {
            "replicas": 1 if running else 0,
            # Two pods on one ReadWriteOnce world corrupt it: the old pod stops before the new starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {LABEL_GAMESERVER: gs.name}},
            "template": {"metadata": {"labels": labels(gs, game.uid), "annotations": annotations},
                         "spec": pod_spec},
        },
    }


DATA_MOUNT_FOR_OWNER = "/peon/data"


def volume_owner(game: Game, helper_image: str | None) -> dict[str, Any] | None:
    """An init step that gives the world's volume to the user the game runs as.

    fsGroup makes a volume group-writable only where the volume plugin supports ownership
    management; hostPath and some local-path provisioners hand out root-owned 0750 folders and
    ignore it, so a game running as uid 1000 could not write its world. The step changes the
    owner of the volume's top folder only (never a recursive walk of a large world), as root
    with CAP_CHOWN alone, from the operator's image, which has chown."""
    sc = game.security_context
    uid = sc.get("runAsUser")
    if not helper_image or not isinstance(uid, int) or uid == 0:
        return None
    gid = sc.get("runAsGroup", sc.get("fsGroup", uid))
    return {"name": "volume-owner", "image": helper_image,
            "command": ["chown", f"{uid}:{gid}", DATA_MOUNT_FOR_OWNER],
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
            # Namespaces whose quotas ask every container for its resources admit it too.
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"cpu": "100m", "memory": "64Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT_FOR_OWNER}]}


SEED_CONTAINER = "seed"


def seed_container(gs: GameServer, helper_image: str | None) -> dict[str, Any] | None:
    """An init step that restores spec.backup.store.seed into an empty world (`peon store
    seed`), so a server applied on a new cluster comes back with its world. A world that holds
    data is kept. When the snapshot cannot be had the step fails with the reason in its
    termination message, and the game never starts on an empty world. The keys come from the
    store's Secret through envFrom; the step writes the world as a restore Job does (the same
    capabilities) and never talks to the API server."""
    store = gs.backup.store
    if store is None or not store.seed or not helper_image:
        return None
    env = [{"name": "RESTIC_REPOSITORY", "value": store.repository(gs.namespace, gs.name)}]
    if store.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": store.region})
    security = {**bk.job_security_context(bk.step_capabilities("store", "seed")),
                "runAsNonRoot": False}
    return {"name": SEED_CONTAINER, "image": helper_image,
            "command": ["peon", "store", "seed", store.seed, bk.DATA_MOUNT,
                        "--host", f"{gs.namespace}/{gs.name}"],
            # optional: a world that holds data is kept without the store, so a store Secret
            # gone later never keeps the game from starting; an empty world fails with restic's reason.
            "env": env, "envFrom": [{"secretRef": {"name": store.secret, "optional": True}}],
            "securityContext": security,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "data", "mountPath": bk.DATA_MOUNT},
                             {"name": "seed-tmp", "mountPath": "/tmp"}]}


def _container_port(p, host_ports: bool) -> dict[str, Any]:
    port = {"name": p.name, "containerPort": p.container_port, "protocol": p.protocol}
    if host_ports:
        port["hostPort"] = p.container_port
    return port


def service(gs: GameServer, game: Game) -> dict[str, Any]:
    meta = _meta(gs, game, "Service")
    if gs.network.annotations:
        meta["annotations"] = dict(gs.network.annotations)
    ports = []
    for p in game.ports:
        sp: dict[str, Any] = {"name": p.name, "port": p.container_port, "targetPort": p.name,
                              "protocol": p.protocol}
        if gs.network.type in ("NodePort", "LoadBalancer") and p.name in gs.network.node_ports:
            sp["nodePort"] = gs.network.node_ports[p.name]
        ports.append(sp)
    spec: dict[str, Any] = {"type": gs.network.type, "selector": {LABEL_GAMESERVER: gs.name},
                            "ports": ports}
    if gs.network.external_traffic_policy and gs.network.type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = gs.network.external_traffic_policy
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
