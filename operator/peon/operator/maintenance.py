"""Maintenance, the I/O half (issue 28): holds a change that would restart a running server
while players are on, warns them through the Game's console, and makes scheduled restarts.

The operator never writes spec, so a hold is a matter of what it applies: while a change is
held, the Deployment keeps the pod template it runs (copied from the cluster, so nothing
rolls) and the settings' Secret and ConfigMap are left as they are (a container restarted
meanwhile reads the settings it was started with). The Deployment carries the digest of the
template last rendered for it (`peon.dev/template-hash`): a new rendering with another digest
is a change that would roll the pod. A scheduled restart is a template annotation
(`peon.dev/scheduled-restart`, the slot), carried over from the running template until the
next slot. What waits, why and until when goes to status.maintenance, the ChangePending
condition (with spec.maintenance) and Events. The decisions are shared/maintenance.py's.

An update (asked by the GameServer's `peon.dev/update` annotation or due by
spec.maintenance.updateSchedule) is one more change of the template: after a beforeUpdate
backup, the game container gets imagePullPolicy Always and the template `peon.dev/update`
(the update's name), held like any change. Once made, Always stays on the running template
(taking it away would roll the pod again) until the template changes for another reason or
the server stops; the next pod then pulls as the Game says (the Kubernetes default).
"""
from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from peon import ANNOTATION_RESTARTED_AT, ANNOTATION_SETTINGS_HASH
from peon.shared import backup as bk, clock, maintenance as mt, status as st
from peon.shared.kube import Kube
from peon.shared.model import Game, GameServer
from peon.shared.rcon import Rcon, RconError
from peon.shared.render import CONTAINER, child_names
from .cache import Cache, digest

log = logging.getLogger(__name__)

ANNOTATION_TEMPLATE_HASH = "peon.dev/template-hash"  # on the Deployment: its template's digest
ANNOTATION_SCHEDULED_RESTART = "peon.dev/scheduled-restart"  # on the pod template: the slot
CONSOLE_TIMEOUT = 5.0  # seconds one warning may take, connection and answer together
HELD_KINDS = frozenset({"Secret", "ConfigMap"})
BACKING_UP = "BackingUp"  # the hold ended; the update's beforeUpdate backup runs first


@dataclass
class Outcome:
    """What the reconcile does with the judgement: the children are changed in place."""
    status: dict[str, Any] | None = None  # status.maintenance (None values remove fields)
    conditions: tuple[dict, ...] = ()
    kept: frozenset[str] = frozenset()  # kinds not to delete while held
    requeue: float | None = None
    held: bool = False
    updated: dict | None = None  # the Updated condition while an update waits for its backup
    events: list[tuple[str, str, str]] = field(default_factory=list)


def template_annotations(tpl: dict | None) -> dict:
    return ((tpl or {}).get("metadata") or {}).get("annotations") or {}


def describe_change(old_tpl: dict, new_tpl: dict) -> str:
    """A rolling change in words, as players and owners care for it."""
    what = []
    old_c = ((old_tpl.get("spec") or {}).get("containers") or [{}])[0]
    new_c = ((new_tpl.get("spec") or {}).get("containers") or [{}])[0]
    if old_c.get("image") != new_c.get("image"):
        what.append(f"the update to {new_c.get('image')}")
    old_a, new_a = template_annotations(old_tpl), template_annotations(new_tpl)
    if old_a.get(ANNOTATION_SETTINGS_HASH) != new_a.get(ANNOTATION_SETTINGS_HASH):
        what.append("new settings")
    if old_a.get(ANNOTATION_RESTARTED_AT) != new_a.get(ANNOTATION_RESTARTED_AT):
        what.append("a restart asked for")
    if new_a.get(mt.ANNOTATION_UPDATE) and \
            old_a.get(mt.ANNOTATION_UPDATE) != new_a.get(mt.ANNOTATION_UPDATE):
        what.append("an update (the image pulled again)")
    return " and ".join(what) or "a change of the server's spec or its Game"


def game_image(tpl: dict | None) -> str:
    """The image of a pod template's game container."""
    return next((c.get("image") or "" for c in ((tpl or {}).get("spec") or {}).get("containers")
                 or () if c.get("name") == CONTAINER), "")


def pull_again(tpl: dict, update: str) -> None:
    """The template of an update: the game's container pulls its image again (Always), and the
    template names the update, so the pod rolls even when nothing else changed."""
    tpl["metadata"].setdefault("annotations", {})[mt.ANNOTATION_UPDATE] = update
    for c in tpl["spec"]["containers"]:
        if c.get("name") == CONTAINER:
            c["imagePullPolicy"] = "Always"


def is_running(desired_dep: dict, actual: dict | None) -> bool:
    """A ready pod players could be on, which the rendered spec keeps running."""
    if actual is None or not (desired_dep.get("spec") or {}).get("replicas"):
        return False
    return bool((actual.get("spec") or {}).get("replicas")) and \
        (actual.get("status") or {}).get("readyReplicas", 0) >= 1


class Maintenance:
    def __init__(self, kube: Kube, cache: Cache, runs: Any = None):
        self.kube, self.cache = kube, cache
        self.runs = runs  # ServerRuns: the beforeUpdate backup an update waits for
        # (ns, name) -> (update, applied at) until status says it (a rollout's status write
        # can be held back while the phase settles)
        self.made: dict[tuple[str, str], tuple[str, str]] = {}

    def judge(self, body: dict, gs: GameServer, game: Game, desired: list[dict],
              players: int | None) -> Outcome:
        ns, name = gs.namespace, gs.name
        policy = gs.maintenance
        mem = (body.get("status") or {}).get("maintenance") or {}
        configured = (body.get("spec") or {}).get("maintenance") is not None
        dep = next((d for d in desired if d["kind"] == "Deployment"), None)
        if dep is None:
            return Outcome()
        actual = self.cache.children.get(("Deployment", ns, name))
        actual_tpl = (actual or {}).get("spec", {}).get("template") or {}
        tpl = dep["spec"]["template"]
        annotations = tpl["metadata"].setdefault("annotations", {})
        carried = template_annotations(actual_tpl).get(ANNOTATION_SCHEDULED_RESTART)
        if carried:
            annotations[ANNOTATION_SCHEDULED_RESTART] = carried
        old_hash = ((actual or {}).get("metadata", {}).get("annotations") or {}).get(
            ANNOTATION_TEMPLATE_HASH)
        now = clock.now()
        # An update: made after its backup; once made, its Always is kept while nothing else
        # changes the running template (dropping it would roll the pod once more).
        asked = clock.parse((body["metadata"].get("annotations") or {}).get(mt.ANNOTATION_UPDATE))
        made_tpl = template_annotations(actual_tpl).get(mt.ANNOTATION_UPDATE)
        recent = self.made.get((ns, name))
        done = max((t for t in (clock.parse(mem.get("lastUpdate")), clock.parse(made_tpl),
                                clock.parse(recent[0] if recent else None)) if t is not None),
                   default=None)
        updates_since = clock.parse(mem.get("updatesSince"))
        if policy.update_schedule and updates_since is None:
            updates_since = now
        wanted, next_update = mt.update_due(policy, now, asked, done, updates_since)
        making = None
        replicas = (dep.get("spec") or {}).get("replicas")
        out_updated = None
        without_update = None  # the template without the update, while nothing runs yet
        if wanted is not None and replicas:
            # Held like any change; its backup is taken when the hold ends (below).
            without_update = copy.deepcopy(tpl)
            pull_again(tpl, clock.iso(wanted))
            making = wanted
        if making is None and made_tpl and replicas and old_hash:
            candidate = copy.deepcopy(tpl)
            pull_again(candidate, made_tpl)
            if digest(candidate) == old_hash:
                dep["spec"]["template"] = tpl = candidate
                annotations = tpl["metadata"]["annotations"]
        new_hash = digest(tpl)
        # A Deployment made before this digest was kept rolls as before, once.
        pending = (describe_change(actual_tpl, tpl)
                   if actual is not None and old_hash and old_hash != new_hash else None)
        restarts_since = clock.parse(mem.get("restartsSince"))
        if policy.restart_schedule and restarts_since is None:
            restarts_since = now
        done = [t for t in (clock.parse(carried), clock.parse(mem.get("lastRestart")),
                            restarts_since) if t is not None] if policy.restart_schedule else []
        running = is_running(dep, actual)
        plan = mt.decide(policy, mt.Observed(
            now=now, pending=pending, running=running, players=players,
            pending_since=clock.parse(mem.get("pendingSince")) if mem.get("pending") else None,
            restart_done=max(done) if done else None,
            warned_for=clock.parse(mem.get("warnedFor")),
            warned_down_to=(dt.timedelta(seconds=mem["warnedDownTo"])
                            if mem.get("warnedDownTo") is not None else None)))
        # The update's beforeUpdate backup, when nothing holds it any more: the world as it is
        # just before the roll, not as it was when the update was asked. Meanwhile the running
        # template stays (the change still waits, for the backup now).
        backing_up = False
        if making is not None and plan.apply:
            ready, out_updated = self.backup_first(body, gs, tpl, making)
            if not ready:
                making = None
                if actual is not None and old_hash:
                    backing_up = True
                else:  # nothing runs yet: the new Deployment is made without the update
                    dep["spec"]["template"] = tpl = without_update
                    annotations = tpl["metadata"]["annotations"]
                    new_hash = digest(tpl)
        out = Outcome(held=plan.held or backing_up, updated=out_updated)
        restarted = [t for t in (clock.parse(carried), clock.parse(mem.get("lastRestart"))) if t]
        last_restart = clock.iso(max(restarted)) if restarted else None
        if plan.restart_slot is not None:
            last_restart = clock.iso(plan.restart_slot)
            annotations[ANNOTATION_SCHEDULED_RESTART] = last_restart
            new_hash = digest(tpl)
            out.events.append(("Normal", "ScheduledRestart", plan.message))
        meta = dep["metadata"]
        if plan.held or backing_up:
            dep["spec"]["template"] = copy.deepcopy(actual_tpl)
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   ANNOTATION_TEMPLATE_HASH: old_hash}
            desired[:] = [d for d in desired if d["kind"] not in HELD_KINDS]
            out.kept = HELD_KINDS
            if plan.held and not mem.get("pending"):
                out.events.append(("Normal", "ChangeHeld",
                                   f"{plan.message} ({clock.iso(plan.deadline)})"))
        else:
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   ANNOTATION_TEMPLATE_HASH: new_hash}
            if mem.get("pending") and pending and plan.restart_slot is None:
                out.events.append(("Normal", "ChangeApplied", plan.message))
            if making is not None:
                image = game_image(tpl)
                out.events.append(("Normal", "Updated", f"the update asked for "
                                   f"{clock.iso(making)}: {image} pulled again, the server "
                                   f"restarted ({plan.message})"))
        if making is not None and plan.apply:
            self.made[(ns, name)] = (clock.iso(making), clock.iso(now), game_image(tpl))
        last_update, updated_at, updated_image = (mem.get("lastUpdate"), mem.get("updatedAt"),
                                                  mem.get("updatedImage"))
        recent = self.made.get((ns, name))
        if recent and (last_update is None or recent[0] > last_update):
            last_update, updated_at, updated_image = recent
        else:
            self.made.pop((ns, name), None)  # status says it
            if made_tpl and (last_update is None or made_tpl > last_update):
                # status lost: the running template says which update, and its image
                last_update, updated_at, updated_image = made_tpl, None, game_image(actual_tpl)
        console = None
        if plan.warn and game.console is not None:  # no console: said in status, not failed
            error = self.say(gs, game, plan.warn)
            if error:
                console = f"players cannot be warned: {error}"
                out.events.append(("Warning", "ConsoleFailed", console))
            else:
                out.events.append(("Normal", "PlayersWarned", f"said in the game: {plan.warn}"))
        elif (plan.held or plan.warned_for) and game.console is None:
            console = "players cannot be warned: the Game declares no console"
        elif plan.held or plan.warned_for:
            console = mem.get("console")  # a failure stays said until the next warning
        reason, message, since = plan.reason, plan.message, plan.pending_since
        if backing_up:  # said as waiting, since when it waits kept (its deadline with it)
            reason, message = BACKING_UP, f"{pending}: backing up before the roll"
            since = (clock.parse(mem.get("pendingSince")) if mem.get("pending") else None) or now
        held = plan.held or backing_up
        if configured or mem or last_update:
            out.status = {
                "pending": pending if held else None,
                "reason": reason if held else None,
                "message": message if held else None,
                "pendingSince": clock.iso(since) if held else None,
                "deadline": clock.iso(plan.deadline) if plan.held else None,
                "warnedFor": clock.iso(plan.warned_for) if plan.warned_for else None,
                "warnedDownTo": (int(plan.warned_down_to.total_seconds())
                                 if plan.warned_down_to is not None and plan.warned_for else None),
                "console": console,
                "restartsSince": clock.iso(restarts_since) if policy.restart_schedule else None,
                "lastRestart": last_restart if policy.restart_schedule else None,
                "nextRestart": clock.iso(plan.next_restart) if plan.next_restart else None,
                "updatesSince": clock.iso(updates_since) if policy.update_schedule else None,
                "lastUpdate": last_update,
                "updatedAt": updated_at,
                "updatedImage": updated_image if last_update else None,
                "nextUpdate": clock.iso(next_update) if next_update else None,
            }
        if configured:
            gen = body["metadata"].get("generation", 0)
            msg = message + (f"; at the latest {clock.iso(plan.deadline)}"
                             if plan.held else "")
            out.conditions = (st.condition("ChangePending", held, reason, msg, gen),)
        look_again = min((t for t in (plan.look_again, next_update) if t is not None and t > now),
                         default=None)
        if look_again is not None:
            out.requeue = max(0.5, min(clock.requeue_cap(), (look_again - now).total_seconds()))
        for event in out.events:
            self.kube.event(body, *event)
        return out

    def backup_first(self, body: dict, gs: GameServer, tpl: dict, update: dt.datetime
                     ) -> tuple[bool, dict | None]:
        """Whether the update may be made now, and the Updated condition while it may not: as a
        new image, it waits for a backup of the world as it is (spec.backup.beforeUpdate, asked
        here, named by the image and the update); a failed backup holds it."""
        if self.runs is None or not gs.backup.before_update:
            return True, None
        image = next((c.get("image") for c in tpl["spec"]["containers"]
                      if c.get("name") == CONTAINER), "")
        gen = body["metadata"].get("generation", 0)
        name = bk.before_update_name(gs.name, f"{image} {clock.iso(update)}")
        run = self.cache.backups.get((gs.namespace, name))
        if run is None:
            self.runs.create_backup(body, name, bk.BEFORE_UPDATE)
            phase = bk.PENDING
        else:
            phase = (run.get("status") or {}).get("phase") or bk.PENDING
        if phase == bk.SUCCEEDED:
            return True, None
        if phase == bk.FAILED:
            why = (run.get("status") or {}).get("message", "")
            return False, st.condition(
                "Updated", False, "BackupFailed",
                f"the update asked for {clock.iso(update)} is held: backup {name} failed "
                f"({why}). Delete that backup to try again, or set spec.backup.beforeUpdate: "
                "false", gen)
        return False, st.condition("Updated", False, "BackingUp",
                                   f"backing up before pulling {image} again ({name})", gen)

    # --- the console -----------------------------------------------------------------------------

    def say(self, gs: GameServer, game: Game, message: str) -> str | None:
        """Shows `message` to the players through the Game's console. Returns what went wrong,
        or None. Bounded in time; the password is never logged."""
        console = game.console
        if console is None:
            return "the Game declares no console"
        command = console.say_command(message)
        try:
            if console.protocol == mt.EXEC:
                pod = self.server_pod(gs.namespace, gs.name)
                if pod is None:
                    return "the server has no running pod"
                result = self.kube.exec(gs.namespace, pod, CONTAINER,
                                        [*console.command, command], CONSOLE_TIMEOUT)
                return None if result.ok else \
                    f"{' '.join(console.command)} failed: {result.error or result.output[-200:]}"
            target = self.rcon_address(gs, game)
            if isinstance(target, str):
                return target
            password = self.password(gs, game)
            if password is None:
                return f"no setting gives {console.password_key}, the console's password"
            asyncio.run(rcon_command(*target, password, command))
            return None
        except RconError as e:
            return str(e)
        except Exception as e:  # an API refusal, a dropped connection: said, never raised
            log.warning("console of %s/%s: %s", gs.namespace, gs.name, type(e).__name__)
            return f"the console could not be reached ({type(e).__name__})"

    def server_pod(self, ns: str, name: str) -> str | None:
        for p in self.cache.pods_of(ns, name):
            if not p["metadata"].get("deletionTimestamp") and \
                    (p.get("status") or {}).get("phase") == "Running" and \
                    "job-name" not in (p["metadata"].get("labels") or {}):
                return p["metadata"]["name"]
        return None

    def rcon_address(self, gs: GameServer, game: Game) -> tuple[str, int] | str:
        """The Service's cluster IP and the console's port (as the prober asks), or why not."""
        port = next((p for p in game.ports if p.name == game.console.port), None)
        svc = self.cache.children.get(("Service", gs.namespace, gs.name))
        ip = ((svc or {}).get("spec") or {}).get("clusterIP")
        if port is None:
            return f"the Game has no port {game.console.port!r}"
        if not ip or ip == "None":
            return "the server's Service has no address yet"
        return ip, port.container_port

    def password(self, gs: GameServer, game: Game) -> str | None:
        """The console's password as the running pod reads it: its settings Secret as it is
        (held with the pod), the Secrets named by secretRef, else the Game's default."""
        return console_password(self.kube, gs, game)


def console_password(kube: Kube, gs: GameServer, game: Game) -> str | None:
    secrets = [kube.get("Secret", gs.namespace, n)
               for n in (child_names(gs.name)["Secret"], *gs.secret_refs)]
    return mt.console_password(game.console, game.env, secrets)


async def rcon_command(host: str, port: int, password: str, command: str) -> str:
    async with Rcon(host, port, password, timeout=CONSOLE_TIMEOUT) as console:
        return await console.command(command)
