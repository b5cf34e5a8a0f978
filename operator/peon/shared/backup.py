"""Backups and restores, the pure part: run names, retention, schedules and Job manifests.

One GameServerBackup object per run (CloudNativePG's model); its Job archives the server's data
volume into the server's backup volume `<gs>-backups` with `peon archive create`. A restore's
Job verifies and unpacks an archive back into the data volume while the server is stopped.
"""
from __future__ import annotations

import copy

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from croniter import croniter

from peon import API_VERSION, LABEL_GAMESERVER, LABEL_MANAGED_BY, MANAGED_BY
from . import clock

MANUAL, SCHEDULED, BEFORE_UPDATE, BEFORE_ERADICATION, BEFORE_STOP = (
    "Manual", "Scheduled", "BeforeUpdate", "BeforeEradication", "BeforeStop")
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINISHED = (SUCCEEDED, FAILED)

FINALIZER_ARCHIVE = "peon.dev/archive"          # on a backup: its archive is deleted with it
FINALIZER_FINAL_BACKUP = "peon.dev/final-backup"  # on a GameServer: eradicate after a backup
LABEL_BACKUP = "peon.dev/backup"
LABEL_RESTORE = "peon.dev/restore"
# On a GameServerBackup the operator made for a snapshot it found in the store and had no
# object for (operator/store_listing.py): no Job ever runs for it.
LABEL_FOUND_IN_STORE = "peon.dev/found-in-store"
DATA_MOUNT, BACKUP_MOUNT = "/data", "/backups"


@dataclass(frozen=True)
class Store:
    """An S3-compatible bucket outside the cluster: each server's backups are snapshots in a
    restic repository of its own there, encrypted with RESTIC_PASSWORD from `secret`."""
    endpoint: str
    bucket: str
    secret: str  # a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, RESTIC_PASSWORD
    prefix: str | None = None  # the repository's folder in the bucket; <namespace>/<server>
    region: str | None = None
    # A new, empty world starts from this snapshot: "latest" (the server's newest) or an id.
    seed: str | None = None

    def repository(self, namespace: str, server: str) -> str:
        """restic's name of the server's repository (no secret in it)."""
        folder = (self.prefix or f"{namespace}/{server}").strip("/")
        return f"s3:{self.endpoint.rstrip('/')}/{self.bucket}/{folder}"


STORE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RESTIC_PASSWORD")


@dataclass(frozen=True)
class Policy:
    schedule: str | None = None
    time_zone: str = "UTC"
    keep_last: int | None = None
    max_age: dt.timedelta | None = None
    before_update: bool = True
    before_eradication: bool = True
    storage_size: str = "20Gi"
    storage_class: str | None = None
    store: Store | None = None  # off-site; None keeps backups on the <server>-backups volume


def parse_duration(text: str) -> dt.timedelta:
    """`30d`, `12h`, `90m`, or combinations such as `1d12h`."""
    parts = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?", text or "")
    if not text or not parts:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h or 90m")
    d, h, m = (int(x or 0) for x in parts.groups())
    return dt.timedelta(days=d, hours=h, minutes=m)


def parse_policy(spec: Mapping[str, Any] | None) -> Policy:
    b = spec or {}
    r = b.get("retention") or {}
    st = b.get("storage") or {}
    return Policy(
        schedule=b.get("schedule"), time_zone=b.get("timeZone") or "UTC",
        keep_last=r.get("keepLast"),
        max_age=parse_duration(r["maxAge"]) if r.get("maxAge") else None,
        before_update=b.get("beforeUpdate", True),
        before_eradication=b.get("beforeEradication", True),
        storage_size=st.get("size", "20Gi"), storage_class=st.get("storageClassName"),
        store=_parse_store(b.get("store")))


def _parse_store(spec: Mapping[str, Any] | None) -> Store | None:
    if not spec:
        return None
    s3 = spec.get("s3") or {}
    if not s3.get("endpoint") or not s3.get("bucket") or not (spec.get("secretRef") or {}).get("name"):
        raise ValueError("store needs s3.endpoint, s3.bucket and secretRef.name")
    seed = spec.get("seed") or None
    if seed is not None and not (seed == "latest" or re.fullmatch(r"[0-9a-f]{8,64}", str(seed))):
        raise ValueError(f"store.seed {seed!r} is neither \"latest\" nor a snapshot id (8 to 64 "
                         "hex digits)")
    return Store(endpoint=s3["endpoint"], bucket=s3["bucket"], secret=spec["secretRef"]["name"],
                 prefix=s3.get("prefix") or None, region=s3.get("region") or None, seed=seed)


# --- names ---------------------------------------------------------------------------------------

def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def fit(name: str, limit: int = 63) -> str:
    """A name within Kubernetes' limit, kept unique by a hash when cut."""
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9].rstrip('-')}-{short_hash(name)}"


def scheduled_name(gs: str, slot: dt.datetime) -> str:
    return fit(f"{gs}-{slot.astimezone(dt.timezone.utc):%Y%m%d-%H%M}")


def before_update_name(gs: str, image: str) -> str:
    return fit(f"{gs}-pre-update-{short_hash(image)}")


def before_stop_name(gs: str, session_start: str) -> str:
    """One per session: the session that is ending names it."""
    stamp = session_start.replace("-", "").replace(":", "").replace("T", "-")[:13]
    return fit(f"{gs}-stop-{stamp}")


def final_name(gs: str, uid: str) -> str:
    return fit(f"{gs}-final-{uid[:8]}")


def backup_volume(gs: str) -> str:
    return f"{gs}-backups"


def archive_path(backup: str) -> str:
    """Where the archive lives inside the backup volume."""
    return f"{BACKUP_MOUNT}/{backup}.tar.gz"


# --- schedule ------------------------------------------------------------------------------------

def schedule_slots(schedule: str, tz: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The most recent slot at or before `now`, and the next one after it (both aware)."""
    local = now.astimezone(ZoneInfo(tz))
    it = croniter(schedule, local)
    nxt = it.get_next(dt.datetime)
    prev = croniter(schedule, local + dt.timedelta(seconds=1)).get_prev(dt.datetime)
    return prev, nxt


def due_slot(schedule: str, tz: str, now: dt.datetime, since: dt.datetime) -> dt.datetime | None:
    """The slot to run now, if one fell due after `since` (the server's creation or the last
    scheduled run); only the latest is run, missed older ones are not made up."""
    prev, _ = schedule_slots(schedule, tz, now)
    return prev if prev > since else None


# A scheduled off-site backup has this long after its slot to be in the store before the
# newest snapshot counts as overdue (a large world's upload takes its time).
OFFSITE_GRACE = dt.timedelta(hours=1)


def newest_offsite(backups: Iterable[Mapping]) -> Mapping | None:
    """The newest successful backup that is a snapshot in the off-site store."""
    done = [b for b in backups if (b.get("status") or {}).get("phase") == SUCCEEDED
            and (b.get("status") or {}).get("snapshot")]
    return max(done, key=finished_at) if done else None


def offsite_overdue(schedule: str, tz: str, now: dt.datetime, newest: dt.datetime | None,
                    since: dt.datetime, grace: dt.timedelta = OFFSITE_GRACE
                    ) -> tuple[dt.datetime | None, dt.datetime]:
    """(the slot whose snapshot is missing, or None), and when to judge again. The schedule
    promised a snapshot at each slot; one more than `grace` ago that falls after the server
    was made and after the newest snapshot is missing: the play since then would be lost with
    the node."""
    promised, following = schedule_slots(schedule, tz, now - grace)
    judge_again = following + grace
    if promised <= since or (newest is not None and newest >= promised):
        return None, judge_again
    return promised, judge_again


# --- retention -----------------------------------------------------------------------------------

def finished_at(b: Mapping) -> tuple[str, str, str]:
    """Sort key: finish time, then creation time and name (times have one-second steps)."""
    st = b.get("status") or {}
    created = b["metadata"].get("creationTimestamp", "")
    return (st.get("completionTime") or created, created, b["metadata"]["name"])


def expired(backups: Iterable[Mapping], keep_last: int | None, max_age: dt.timedelta | None,
            now: dt.datetime) -> list[str]:
    """Names of the finished runs retention removes. Pinned runs (`keep: true`) never count and
    never expire; the newest successful run is never removed; failed runs follow the same
    limits among themselves. Running runs are left alone."""
    done = [b for b in backups if (b.get("status") or {}).get("phase") in FINISHED
            and not (b.get("spec") or {}).get("keep")]
    doomed: set[str] = set()
    for phase in FINISHED:
        runs = sorted((b for b in done if b["status"]["phase"] == phase), key=finished_at,
                      reverse=True)
        if keep_last is not None:
            doomed |= {b["metadata"]["name"] for b in runs[keep_last:]}
        if max_age is not None:
            cutoff = now - max_age
            # A run with no readable time has no known age: it is not expired by age.
            doomed |= {b["metadata"]["name"] for b in runs
                       if (t := clock.parse(finished_at(b)[0])) is not None and t < cutoff}
    newest_ok = max((b for b in backups if (b.get("status") or {}).get("phase") == SUCCEEDED),
                    key=finished_at, default=None)
    if newest_ok is not None:
        doomed.discard(newest_ok["metadata"]["name"])
    return sorted(doomed)


# --- manifests -----------------------------------------------------------------------------------

def backup_object(gs: Mapping, name: str, reason: str, labels: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    meta = gs["metadata"]
    return {"apiVersion": API_VERSION, "kind": "GameServerBackup",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": {LABEL_GAMESERVER: meta["name"], **(labels or {})}},
            "spec": {"gameServer": meta["name"], "reason": reason}}


def backup_claim(gs: Mapping, policy: Policy) -> dict[str, Any]:
    """The server's backup volume. No owner: it outlives the server (and its eradication)."""
    meta = gs["metadata"]
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": policy.storage_size}}}
    if policy.storage_class:
        spec["storageClassName"] = policy.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": backup_volume(meta["name"]), "namespace": meta["namespace"],
                         "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_GAMESERVER: meta["name"],
                                    "app.kubernetes.io/component": "backups"}},
            "spec": spec}


# What each step's container may do. It runs as root (a container's capabilities are only
# root's: Kubernetes gives a non-root process no ambient ones) with every capability dropped but
# what the step needs, as measured by running each step under `setpriv --bounding-set` (see
# docs/design.md, "Backups"): none of them talks to the API server, so no token is mounted.
READ_WORLD = ("DAC_READ_SEARCH",)  # read files and list folders whatever their owner and mode
# write anywhere in the world, give each entry its owner, mode and times back, and keep a
# folder's set-group bit when its group is not root's (volumes with an fsGroup)
WRITE_WORLD = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID")
STEP_CAPABILITIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("archive", "create"): READ_WORLD,
    ("archive", "restore"): WRITE_WORLD,
    ("archive", "delete"): (),        # its own file (root's) in its own volume
    ("store", "backup"): READ_WORLD,
    ("store", "restore"): WRITE_WORLD,
    ("store", "forget"): (),          # the network and /tmp only
    ("store", "list"): (),            # the network only: the snapshots, for the operator
    ("store", "export"): WRITE_WORLD,  # a download: the snapshot restored, then archived
    ("store", "seed"): WRITE_WORLD,    # a game pod's init step: a restore into an empty world
    ("download", "archive"): (),      # a download: `cat` of an archive root wrote
}


def step_capabilities(tool: str, action: str) -> tuple[str, ...]:
    try:
        return STEP_CAPABILITIES[(tool, action)]
    except KeyError:
        raise ValueError(f"no capabilities are decided for `peon {tool} {action}`") from None


def job_security_context(add: Sequence[str]) -> dict[str, Any]:
    """A step's container: root, every capability dropped but `add`, no way to gain more, and
    a read-only root (a step writes only to its volumes, and restic to its /tmp)."""
    caps: dict[str, list[str]] = {"drop": ["ALL"]}
    if add:
        caps["add"] = list(add)
    return {"runAsUser": 0, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": caps}


@dataclass(frozen=True)
class StoreTarget:
    """Where a store Job's repository is: restic's name for it, the Secret with the keys and
    the password, the region. Recorded in a backup's status, so a restore or a delete uses the
    repository the snapshot is in, whatever the policy says later."""
    repository: str
    secret: str
    region: str | None = None


def run_job(run: Mapping, kind: str, action: list[str], data_claim: str | None,
            backup_claim_name: str | None, image: str, node: str | None, data_read_only: bool,
            suffix: str, scheduling: Mapping[str, Any] | None = None,
            store: StoreTarget | None = None) -> dict[str, Any]:
    """A Job that mounts the data volume and runs `peon archive ...` with the backup volume,
    or `peon store ...` with the store's repository (`store`; the keys and the password come
    from its Secret through envFrom, never through the Job's spec). `scheduling` (the server's
    pod fields: nodeSelector, tolerations, affinity, priority) sends it where the server may
    run, so it tolerates the same taints; `node` pins it beside the running server: the
    volumes are ReadWriteOnce. The pod gets no service-account token and only the
    capabilities its step needs (STEP_CAPABILITIES)."""
    meta = run["metadata"]
    gs_name = run["spec"]["gameServer"]
    run_label = LABEL_BACKUP if kind == "GameServerBackup" else LABEL_RESTORE
    labels = {**(meta.get("labels") or {}), LABEL_MANAGED_BY: MANAGED_BY,
              LABEL_GAMESERVER: gs_name, run_label: meta["name"]}
    tool = "store" if store else "archive"
    container: dict[str, Any] = {
        "name": tool, "image": image,
        "command": ["peon", tool, *action],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [],
        "securityContext": job_security_context(step_capabilities(tool, action[0]) if action else ()),
    }
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": []}
    if store:
        container["env"] = [{"name": "RESTIC_REPOSITORY", "value": store.repository}] + (
            [{"name": "AWS_DEFAULT_REGION", "value": store.region}] if store.region else [])
        container["envFrom"] = [{"secretRef": {"name": store.secret}}]
        # restic assembles packs in TMPDIR before it uploads them.
        container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
        pod["volumes"].append({"name": "tmp", "emptyDir": {}})
    if backup_claim_name:
        container["volumeMounts"].append({"name": "backups", "mountPath": BACKUP_MOUNT})
        pod["volumes"].append({"name": "backups",
                               "persistentVolumeClaim": {"claimName": backup_claim_name}})
    if data_claim:  # a delete Job needs only the backup volume
        pod["containers"][0]["volumeMounts"].insert(
            0, {"name": "data", "mountPath": DATA_MOUNT, "readOnly": data_read_only})
        pod["volumes"].insert(0, {"name": "data", "persistentVolumeClaim": {"claimName": data_claim}})
    pod.update(copy.deepcopy(dict(scheduling or {})))
    if node:
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), "kubernetes.io/hostname": node}
    # `peon archive` and restic touch files and the store, never the API server.
    pod["automountServiceAccountToken"] = False
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": fit(f"{meta['name']}-{suffix}"), "namespace": meta["namespace"],
                     "labels": labels,
                     "ownerReferences": [{"apiVersion": API_VERSION, "kind": kind,
                                          "name": meta["name"], "uid": meta["uid"],
                                          "controller": True, "blockOwnerDeletion": True}]},
        # A failed run is a Failed object, not a retry loop: the next run is a new object.
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 6 * 3600, "ttlSecondsAfterFinished": 86400,
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


LABEL_DOWNLOAD = "peon.dev/download"
DOWNLOAD_SECONDS = 3600  # a download pod's whole life, should its client go away
EXPORT_PATH = "/tmp/export.tar.gz"


def download_pod(run: Mapping, image: str, pod_name: str,
                 scheduling: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A short-lived pod that holds a finished backup for `peon backup download`: the backup
    volume (read only) for an archive, the store's Secret and scratch space for a snapshot.
    It only waits; the download runs in it through exec, and the pod deletes nothing."""
    meta, status = run["metadata"], run.get("status") or {}
    store = StoreTarget(status["store"], status["storeSecret"], status.get("storeRegion")) \
        if status.get("snapshot") and status.get("store") else None
    job = run_job(run, "GameServerBackup", [], None,
                  None if store else status["volume"], image, None, True, "download",
                  scheduling, store=store)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container.update(name="download", command=["sleep", str(DOWNLOAD_SECONDS)],
                     securityContext=job_security_context(
                         step_capabilities("store", "export") if store
                         else step_capabilities("download", "archive")))
    for m in container["volumeMounts"]:
        if m["name"] == "backups":
            m["readOnly"] = True
    pod.update(activeDeadlineSeconds=DOWNLOAD_SECONDS, terminationGracePeriodSeconds=0)
    labels = {**job["metadata"]["labels"], LABEL_DOWNLOAD: meta["name"]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": meta["namespace"], "labels": labels},
            "spec": pod}


def download_command(run: Mapping) -> list[str]:
    """What the download pod runs to write the backup, as a Peon archive, to its stdout."""
    status = run.get("status") or {}
    if status.get("snapshot") and status.get("store"):
        return ["sh", "-c", f'peon store export "$0" {DATA_MOUNT} {EXPORT_PATH} >&2 && '
                f"cat {EXPORT_PATH}", status["snapshot"]]
    return ["cat", status["archive"]]


def job_finished_at(job: Mapping) -> str | None:
    """When the Job finished, by the API server's clock: its completionTime, else (a Job seen
    between SuccessCriteriaMet and Complete, which comes with completionTime) the time its
    finishing condition turned True. Mixing in the operator's own clock misordered retention."""
    st = job.get("status") or {}
    if st.get("completionTime"):
        return st["completionTime"]
    times = [c.get("lastTransitionTime") for c in st.get("conditions") or []
             if c.get("status") == "True" and c.get("type") in
             ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")]
    return max(filter(None, times), default=None)


def job_outcome(job: Mapping | None) -> tuple[str, str]:
    """(phase, message) of a run from its Job."""
    if job is None:
        return PENDING, "creating the Job"
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c["type"] in ("Complete", "SuccessCriteriaMet"):
            return SUCCEEDED, "the Job completed"
        if c["type"] in ("Failed", "FailureTarget"):
            return FAILED, f"the Job failed: {c.get('reason', '')} {c.get('message', '')}".strip()
    if st.get("active") or st.get("startTime"):
        return RUNNING, "the Job is running"
    return PENDING, "waiting for the Job's pod"


# --- consistent saves (the Game's backupHooks) -----------------------------------------------------

HOOKS_PENDING, HOOKS_DONE, HOOKS_FAILED = "Pending", "Done", "Failed"
SERVER_CONTAINER = "server"


def hook_pod(pods: Iterable[Mapping]) -> str | None:
    """The pod whose game process writes the world now (its server container running), which
    the before and after commands run in; None when nothing runs, so nothing needs a save."""
    for p in pods:
        if p["metadata"].get("deletionTimestamp") or (p.get("status") or {}).get("phase") != "Running":
            continue
        for c in (p.get("status") or {}).get("containerStatuses") or []:
            if c.get("name") == SERVER_CONTAINER and (c.get("state") or {}).get("running") is not None:
                return p["metadata"]["name"]
    return None


def hook_failure(stage: str, command: Sequence[str], code: int | None, error: str,
                 output: str) -> str:
    """What a failed hook says on the backup: which command, how it ended, and the end of what
    it printed (the last line is usually the reason)."""
    tail = " ".join(output.split())[-300:]
    return (f"backupHooks.{stage} command {' '.join(command)!r} failed ({error or 'no exit code'})"
            + (f": {tail}" if tail else ""))
