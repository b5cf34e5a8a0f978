"""Off-site backups: the tool that store Jobs run, `peon store backup|restore|forget|list`.

The engine is restic (docs/design.md says why): each GameServer has one repository in the
store, `s3:<endpoint>/<bucket>/<prefix>`, encrypted with the password from the store's Secret;
a backup is a snapshot, deduplicated against the server's earlier ones, so an unchanged world
adds almost nothing. restic writes a snapshot only when every byte of it is stored, so a run
cut off half-way leaves no snapshot that could pass for good.

Credentials come from the environment (the Job's envFrom the store's Secret): AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, RESTIC_PASSWORD, and RESTIC_REPOSITORY, which the operator sets. Nothing
here prints them; restic's own messages are passed on, trimmed to what says what went wrong.

Restore is the local restore's three steps: the snapshot is restored into a staging folder
inside the target (restic checks every blob it reads against its MAC and hash), the target's space is
checked before, and the old world is swapped out and deleted only once the new one is whole
(archive.swap_in). A corrupted object, a wrong password or an unreachable store fails the
restore before the swap: the world stays as it was.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from . import archive
from peon.shared import clock

TAG_BACKUP = "peon.dev/backup"
# What a snapshot says of itself, for a cluster that has no object for it (listed back): why it
# was taken, the server's Game and the image that wrote the world.
TAG_REASON, TAG_GAME, TAG_IMAGE = "peon.dev/reason", "peon.dev/game", "peon.dev/image"
TAG_LIMIT = 512  # a tag's value, as written and as read back (the store is not trusted)
# Exit codes restic documents (doc/075_scripting.rst): 3 = some source files could not be read,
# 10 = no repository at that location (0.17+), 12 = wrong password (0.17.1+).
EXIT_INCOMPLETE, EXIT_NO_REPOSITORY, EXIT_WRONG_PASSWORD = 3, 10, 12


class StoreError(Exception):
    """A store operation that failed, with a message for the backup's status."""


@dataclass
class Result:
    snapshot: str
    files: int = 0
    size: int = 0      # bytes the world holds
    added: int = 0     # bytes this backup added to the store (after dedup, before compression)
    warnings: list[str] = field(default_factory=list)

    def json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v or k == "snapshot"})


def repository(endpoint: str, bucket: str, prefix: str) -> str:
    """restic's name for a repository in an S3 bucket (path-style for any endpoint)."""
    return f"s3:{endpoint.rstrip('/')}/{bucket}" + (f"/{prefix.strip('/')}" if prefix.strip("/") else "")


# What restic says on stderr while it retries (it retries a missing bucket, refused
# credentials and an unanswering store for minutes): each decides the probe at once.
_MISSING = ("bucket does not exist", "repository does not exist", "key does not exist",
            "unable to open config file")
_UNREACHABLE = ("connection refused", "no such host", "network is unreachable", "i/o timeout")
_REFUSED = ("access denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
            "signature we calculated does not match", "access key id you provided does not exist")


def explain(returncode: int, stderr: str, what: str) -> str:
    """restic's failure as a sentence a user can act on; the last lines of its own message
    follow (they name no secret: restic never prints the password or the keys)."""
    text = stderr.strip()
    low = text.lower()
    tail = " ".join(text.splitlines()[-3:])[-400:]
    if returncode == EXIT_WRONG_PASSWORD or "wrong password" in low:
        why = "the encryption password (RESTIC_PASSWORD in the store's Secret) does not open the repository"
    elif any(s in low for s in _REFUSED + ("403 forbidden", "status code 403")):
        why = "the store refused the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the store's Secret)"
    elif any(s in low for s in ("ciphertext verification failed", "hash mismatch",
                                "invalid data returned", "checksum")):
        why = "an object in the store is damaged (it does not decrypt or match its hash)"
    elif "nosuchbucket" in low or "bucket does not exist" in low or "the specified bucket does not exist" in low:
        why = "the bucket does not exist, and these credentials may not create it"
    elif any(s in low for s in ("connection refused", "no such host", "i/o timeout", "timeout",
                                "network is unreachable", "connection reset", "eof")):
        why = "the store cannot be reached"
    elif returncode == EXIT_NO_REPOSITORY or "repository does not exist" in low:
        why = "there is no repository at that location"
    else:
        why = f"restic exited with {returncode}"
    return f"{what}: {why} ({tail})" if tail else f"{what}: {why}"


def restic_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """restic's environment: ENVIRON (the process's) over two defaults. GOGC=200: a backup is
    CPU-bound, sharing the node's cores with compression, encryption and often the store
    itself, and restic's heap is small (its buffers and the index), so Go's collector may run
    half as often. RESTIC_PROGRESS_FPS=1: with --json restic writes a status line 60 times a
    second, and Peon drops them all (only the summary counts). bench/store.py --rounds 3
    (medians, up into a made repository): 9.9 s before, 9.1 s with GOGC=200 alone."""
    return {"GOGC": "200", "RESTIC_PROGRESS_FPS": "1",
            **(os.environ if environ is None else environ)}


def _restic(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["restic", "--no-cache", *args], capture_output=True, text=True,
                              timeout=timeout, env=restic_env())
    except FileNotFoundError as e:
        raise StoreError("restic is not installed in this image") from e
    except subprocess.TimeoutExpired as e:
        raise StoreError(f"restic {args[0]} did not finish within {timeout:.0f} s "
                         "(the store may be unreachable)") from e


def probe_seconds() -> float:
    """How long the first call may take before the store counts as unreachable: restic itself
    retries a store that does not answer for many minutes."""
    return float(os.environ.get("PEON_STORE_PROBE_SECONDS") or 120)


def _probe() -> str:
    """Is the repository there? "ok", or "missing" (restic creates it), deciding from restic's
    first words rather than waiting out its retries; raises StoreError for anything else."""
    return _watched("cat", "config")[0]


def _watched(*command: str, what: str = "cannot open the repository") -> tuple[str, str]:
    """Run restic COMMAND, watching all of it (see _run_watched). Returns ("ok", its stdout) or
    ("missing", ""); raises StoreError for anything else. A read that opens the repository
    anyway (the size of a snapshot) is its own probe: each restic run derives the key again
    (about 0.7 s)."""
    run = _run_watched(list(command))
    if run.verdict is None and run.code == 0:
        return "ok", run.stdout
    return _judged(run, what), ""


@dataclass
class Watched:
    verdict: str | None  # what the watch decided: unreachable, refused, password, missing, silent
    code: int
    stdout: str          # less restic's --json progress lines
    stderr: str


STDERR_KEPT = 64 << 10  # the tail of restic's stderr kept for a message


def _run_watched(command: list[str], until_output: bool = False) -> Watched:
    """Run restic COMMAND, watching its stderr: an unreachable store, refused keys, a wrong
    password or a missing repository end it at once (restic would retry for minutes), and no
    answer within probe_seconds() is unreachable ("silent"). With UNTIL_OUTPUT (a command run
    with --json, which prints its progress many times a second once the repository is open
    and the work has begun), the watch ends at restic's first line on stdout: from then on the
    run takes as long as the world needs, and what restic says is only kept for the message.
    So a backup or a restore is its own probe, and no run of restic is spent on asking first."""
    import threading
    try:
        proc = subprocess.Popen(["restic", "--no-cache", *command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=restic_env())
    except FileNotFoundError as e:
        raise StoreError("restic is not installed in this image") from e
    silent: list[bool] = []

    def kill_silent() -> None:
        silent.append(True)
        proc.kill()

    timer = threading.Timer(probe_seconds(), kill_silent)
    watching = threading.Event()
    watching.set()
    kept: list[str] = []

    def read_stdout() -> None:
        for line in proc.stdout:
            if until_output and watching.is_set():
                watching.clear()
                timer.cancel()
            if not line.startswith('{"message_type":"status"'):
                kept.append(line)

    timer.start()
    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    seen: list[str] = []
    held = 0
    verdict = None
    try:
        for line in proc.stderr:
            seen.append(line)
            held += len(line)
            while held > STDERR_KEPT and len(seen) > 1:
                held -= len(seen.pop(0))
            if not watching.is_set():
                continue
            low = line.lower()
            if any(s in low for s in _UNREACHABLE):
                verdict = "unreachable"
            elif any(s in low for s in _REFUSED):
                verdict = "refused"
            elif "wrong password" in low:
                verdict = "password"
            elif any(s in low for s in _MISSING):
                verdict = "missing"
            if verdict:
                proc.kill()
                break
        code = proc.wait()
        reader.join(10)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if verdict is None and silent and code < 0:
        verdict = "silent"
    return Watched(verdict, code, "".join(kept), "".join(seen))


def _judged(run: Watched, what: str, opening: str = "cannot open the repository") -> str:
    """A watched run that did not succeed: "missing" (no repository, or an object of it the
    command needs), else StoreError with the reason (OPENING leads what the watch decided)."""
    if run.verdict == "missing" or (run.verdict is None and run.code == EXIT_NO_REPOSITORY):
        return "missing"
    if run.verdict == "silent":
        raise StoreError(f"{opening}: the store cannot be reached: no answer within "
                         f"{probe_seconds():.0f} s")
    if run.verdict is None:
        raise StoreError(explain(run.code, run.stderr, what))
    raise StoreError(explain(1, run.stderr, opening))


def _init() -> None:
    """Create the repository (restic creates the bucket too when the keys may). A listing and
    a first backup may both find it missing and both create it: restic refuses the second
    ("already initialized"), and that one then finds the repository the other made."""
    made = _restic("init", "--quiet", timeout=probe_seconds())
    if made.returncode != 0:
        error = StoreError(explain(made.returncode, made.stderr, "cannot create the repository"))
        try:
            there = _probe() == "ok"
        except StoreError as opening:  # what opening it says (a wrong password) comes along
            raise error from opening
        if not there:
            raise error


def tags(name: str, reason: str | None = None, game: str | None = None,
         image: str | None = None) -> list[str]:
    """The snapshot's tags: the backup's name, and what a listing reads back. restic splits
    a --tag on commas, so none is kept."""
    out = []
    for key, value in ((TAG_BACKUP, name), (TAG_REASON, reason), (TAG_GAME, game),
                       (TAG_IMAGE, image)):
        value = (value or "").replace(",", "")[:TAG_LIMIT]
        if value:
            out += ["--tag", f"{key}={value}"]
    return out


def backup(source: str, host: str, name: str, reason: str | None = None,
           game: str | None = None, image: str | None = None) -> Result:
    """Snapshot SOURCE (the world) into the repository, tagged with the backup's name (and its
    reason, Game and image, when given). The backup is its own probe (watched until restic
    starts on the world); at a server's first backup it finds no repository, which is then
    created, and the backup runs again."""
    command = ["backup", source, "--json", "--host", host, *tags(name, reason, game, image),
               # restic's scanner walks the world a second time only to estimate progress.
               "--no-scan",
               # Peon's own folders at the top of a world (a restore's staging) are not the world.
               "--exclude", os.path.join(source, archive.RESERVED + "*")]
    run = _run_watched(command, until_output=True)
    if _not_started(run):
        if _judged(run, "the backup failed") == "missing":  # anything else raised
            _init()
            run = _run_watched(command, until_output=True)
            if _not_started(run) and _judged(run, "the backup failed") == "missing":
                raise StoreError("the repository was created, yet restic does not find it")
    summary = _summary(run.stdout)
    if run.code == EXIT_INCOMPLETE and summary.get("snapshot_id"):
        # Some files could not be read: a snapshot that silently misses a file is worse than
        # none, so it is removed and the run fails (as the local archive does).
        _restic("forget", summary["snapshot_id"])
        errors = [m for m in _messages(run.stdout) if m.get("message_type") == "error"]
        first = errors[0].get("item") if errors else "some files"
        raise StoreError(f"cannot read {first} (and {max(0, len(errors) - 1)} more): "
                         "the snapshot was removed")
    if run.code != 0 or not summary.get("snapshot_id"):
        raise StoreError(explain(run.code, run.stderr, "the backup failed"))
    return Result(snapshot=summary["snapshot_id"], files=int(summary.get("total_files_processed", 0)),
                  size=int(summary.get("total_bytes_processed", 0)),
                  # What the store grew by: compressed and encrypted (restic 0.17 and later
                  # report it apart from the new data's own size).
                  added=int(summary.get("data_added_packed", summary.get("data_added", 0))))


def _not_started(run: Watched) -> bool:
    """Did the watch end the run, or restic find no repository, before the work began?"""
    return run.verdict is not None or run.code == EXIT_NO_REPOSITORY


def restore(snapshot: str, source: str, target: str, size: int | None = None) -> Result:
    """Replace TARGET's contents with SOURCE as the snapshot holds it: check the space, stage,
    swap. SIZE is the world's size as the backup recorded it (the operator passes its
    status.size); without it restic's stats reads it first (one run of restic more, with
    its key derivation: about a second)."""
    what = f"restoring snapshot {snapshot} failed; the world is as it was"
    if size is not None and size < 0:
        raise StoreError(f"a world's size cannot be {size} bytes")
    # Without a size, the stats run is the probe: the store answers, the snapshot is there.
    need = _restore_size(snapshot) if size is None else size
    target = os.path.abspath(target)
    os.makedirs(target, exist_ok=True)
    warnings = archive.clear_leftovers(target)
    archive.check_space_for(target, need)
    staging = tempfile.mkdtemp(prefix=archive.STAGING_PREFIX, dir=target)
    try:
        # restic checks every blob it reads against its MAC and its hash (StreamPack); a
        # --verify would read the whole world back from the disk again (docs/design.md). The
        # restore is its own probe, watched until restic starts writing.
        with archive.syncing_in_the_background(staging):
            run = _run_watched(["restore", f"{snapshot}:{source}", "--target", staging,
                                "--json"], until_output=True)
        if _not_started(run) and _judged(run, what, what) == "missing":  # anything else raised
            raise StoreError(_lacking(snapshot))
        if run.code != 0:
            raise StoreError(explain(run.code, run.stderr, what))
        archive.sync_volume(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        warnings += archive.swap_in(target, staging)
    except archive.ArchiveError as e:
        raise StoreError(str(e)) from e
    return Result(snapshot=snapshot, size=need, warnings=warnings)


def _lacking(snapshot: str) -> str:
    return (f"the repository at {os.environ.get('RESTIC_REPOSITORY', '?')} is not there, or "
            f"lacks what snapshot {snapshot} needs; the world is as it was")


# What a fresh volume may hold that is not a world: the file system's own folder, and Peon's
# leftovers of a restore cut off half-way (restore clears them).
NOT_THE_WORLD = ("lost+found",)
SNAPSHOT_ID = re.compile(r"[0-9a-f]{8,64}")


def world_is_empty(target: str) -> bool:
    """Does TARGET hold no world (a new, empty volume)? Decided before the store is asked."""
    try:
        names = os.listdir(target)
    except FileNotFoundError:
        return True
    return not [n for n in names if n not in NOT_THE_WORLD and not n.startswith(archive.RESERVED)]


def seed(ref: str, target: str, host: str) -> dict[str, Any]:
    """A new world from the store: REF ("latest" of HOST's snapshots, or a snapshot id) restored
    into TARGET when it holds nothing; a world that holds data is never touched."""
    if not world_is_empty(target):
        return {"kept": "the world holds data"}
    if ref != "latest" and not SNAPSHOT_ID.fullmatch(ref):
        raise StoreError(f"{ref!r} is neither \"latest\" nor a snapshot id")
    if _probe() != "ok":
        raise StoreError(f"there is no repository at {os.environ.get('RESTIC_REPOSITORY', '?')}, "
                         "so no snapshot to seed the world from")
    snap = pick_snapshot(_snapshots(host), ref, host)
    paths = snap.get("paths") or []
    source = paths[0] if len(paths) == 1 else "/data"
    # The world's size as the snapshot recorded it (restic 0.17 and later), for the space
    # check: no stats run first.
    summary = snap.get("summary") if isinstance(snap.get("summary"), dict) else {}
    size = summary.get("total_bytes_processed")
    restore(snap["id"], source, target, size if isinstance(size, int) and size >= 0 else None)
    return {"seeded": snap["id"], "time": snapshot_time(snap.get("time", ""))}


LIST_LIMIT = 5000  # the newest snapshots one listing gives (about 2 MB of JSON at most)


def list_snapshots(host: str, limit: int = LIST_LIMIT, create: bool = False) -> dict[str, Any]:
    """HOST's snapshots that Peon made (tagged with a backup's name), newest first, as the
    operator lists them back: id, time, the backup's name, reason, Game and image from the
    tags, the world's size and files, the folder backed up. At most LIMIT ("complete": false
    when there were more). A repository that is not there holds none ("missing": true), and
    the operator takes that for no word at all: it removes nothing on it. With CREATE it is
    made then ("created": true, still no word), so that the server's first backup finds it:
    `init` and its key calibration cost seconds that backup would otherwise wait for, and keys
    that may read but not write are said at the server's first listing, not at its first
    backup."""
    if _probe() != "ok":
        if create:
            _init()
            return {"host": host, "snapshots": [], "complete": False, "created": True}
        return {"host": host, "snapshots": [], "complete": False, "missing": True}
    dated = []
    for snap in _snapshots(host):
        entry = listed(snap)
        if entry is not None:
            # Ordered by restic's own time, not the listed one (whole seconds): two backups in
            # one second are still newest first.
            dated.append((clock.parse(str(snap.get("time"))), entry["id"], entry))
    dated.sort(key=lambda d: d[:2], reverse=True)
    entries = [entry for _, _, entry in dated]
    return {"host": host, "snapshots": entries[:limit], "complete": len(entries) <= limit}


def listed(snap: dict[str, Any]) -> dict[str, Any] | None:
    """One snapshot as a listing gives it, or None when it is not one of Peon's backups. Every
    value is bounded: the store's contents are not trusted."""
    sid = str(snap.get("id") or "")
    if not re.fullmatch(r"[0-9a-f]{64}", sid):
        return None
    values: dict[str, str] = {}
    for tag in snap.get("tags") or []:
        if isinstance(tag, str):
            key, _, value = tag.partition("=")
            values.setdefault(key, value[:TAG_LIMIT])
    if not values.get(TAG_BACKUP):
        return None  # made by hand or by another tool: not a backup Peon can name
    when = clock.parse(str(snap.get("time") or ""))
    if when is None:
        return None
    paths = [p for p in snap.get("paths") or [] if isinstance(p, str)]
    summary = snap.get("summary") if isinstance(snap.get("summary"), dict) else {}
    entry: dict[str, Any] = {"id": sid, "time": clock.iso(when), "name": values[TAG_BACKUP],
                             "path": paths[0][:TAG_LIMIT] if len(paths) == 1 else ""}
    for field_, tag in (("reason", TAG_REASON), ("game", TAG_GAME), ("image", TAG_IMAGE)):
        if values.get(tag):
            entry[field_] = values[tag]
    for field_, key in (("size", "total_bytes_processed"), ("files", "total_files_processed")):
        if isinstance(summary.get(key), int) and summary[key] >= 0:
            entry[field_] = summary[key]
    return entry


def _snapshots(host: str) -> list[dict[str, Any]]:
    listed = _restic("snapshots", "--json", "--quiet", "--host", host, timeout=probe_seconds())
    if listed.returncode != 0:
        raise StoreError(explain(listed.returncode, listed.stderr, "cannot list the snapshots"))
    try:
        return [s for s in json.loads(listed.stdout or "[]") or [] if isinstance(s, dict)]
    except ValueError as e:
        raise StoreError("restic listed the snapshots in a form Peon does not read") from e


def pick_snapshot(snapshots: list[dict[str, Any]], ref: str, host: str) -> dict[str, Any]:
    """The newest of SNAPSHOTS for "latest", else the one whose id starts with REF."""
    if ref == "latest":
        if not snapshots:
            raise StoreError(f"the repository holds no snapshot of {host} to seed the world from")
        # restic writes each snapshot's time in its host's zone: compare them as instants.
        # (to the microsecond: two backups may fall in one second)
        return max(snapshots, key=lambda s: (clock.parse(str(s.get("time") or "")) or
                                             clock.parse("1970-01-01T00:00:00Z")))
    found = [s for s in snapshots if str(s.get("id", "")).startswith(ref)]
    if len(found) != 1:
        raise StoreError(f"snapshot {ref} of {host} is not in the repository" if not found else
                         f"snapshot id {ref} is ambiguous: give more of it")
    return found[0]


def snapshot_time(text: str) -> str:
    """restic's time (nanoseconds, any offset) as RFC 3339 in UTC to the second."""
    return clock.iso(clock.parse(text)) or text


def export(snapshot: str, source: str, archive_path: str) -> archive.Result:
    """The snapshot's world as a Peon archive (what a local backup makes, with its checksum
    file), for a download: it restores anywhere with `peon archive restore`."""
    folder = os.path.dirname(os.path.abspath(archive_path)) or "."
    archive.check_space_for(folder, 2 * _restore_size(snapshot))  # the world, then its archive
    staging = tempfile.mkdtemp(prefix="export-", dir=folder)
    try:
        run = _restic("restore", f"{snapshot}:{source}", "--target", staging)
        if run.returncode != 0:
            raise StoreError(explain(run.returncode, run.stderr, f"reading snapshot {snapshot} failed"))
        return archive.create(staging, archive_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def forget(snapshot: str) -> dict[str, Any]:
    """Remove the snapshot and the data only it used. A snapshot already gone is fine."""
    if _probe() != "ok":
        return {"snapshot": snapshot, "deleted": False}  # no repository, so no snapshot
    listed = _restic("snapshots", "--json", "--quiet")
    if listed.returncode != 0:
        raise StoreError(explain(listed.returncode, listed.stderr, "cannot list the snapshots"))
    ids = {s.get("id") for s in json.loads(listed.stdout or "[]") or []}
    if snapshot not in ids:
        return {"snapshot": snapshot, "deleted": False}
    run = _restic("forget", snapshot, "--prune", "--quiet")
    if run.returncode != 0:
        raise StoreError(explain(run.returncode, run.stderr, f"cannot delete snapshot {snapshot}"))
    return {"snapshot": snapshot, "deleted": True}


def _restore_size(snapshot: str) -> int:
    """The snapshot's restored size (it holds the one world: `stats` takes no subfolder). It
    is the probe as well: no repository, a wrong password, an unreachable store are said here,
    in bounded time, before anything is written."""
    verdict, out = _watched("stats", snapshot, "--mode", "restore-size", "--json", "--quiet",
                            what=f"cannot read snapshot {snapshot}; the world is as it was")
    if verdict == "missing":  # the repository, or an object of it the snapshot needs
        raise StoreError(_lacking(snapshot))
    try:
        return int(json.loads(out.strip().splitlines()[-1])["total_size"])
    except (ValueError, KeyError, IndexError) as e:
        raise StoreError(f"restic stats gave no size for snapshot {snapshot}") from e


def _messages(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def _summary(stdout: str) -> dict[str, Any]:
    return next((m for m in reversed(_messages(stdout)) if m.get("message_type") == "summary"), {})
