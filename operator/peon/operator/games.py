"""The Game reconciler: a catalogue entry says whether a pod can be built from it.

A Game is cluster-scoped and has no children; its one output is `status.conditions[Valid]`, so
`kubectl get games` shows a broken entry before any server uses it. Its servers still say which
Game field is wrong (their Valid condition and a Warning Event): Events need a namespace, and
the servers' are the ones their owners watch.

Which operator speaks for a Game: one that watches the whole cluster speaks for every Game; one
limited to namespaces (`--namespace`) only for the Games its servers use. Two releases that
each own some namespaces would otherwise both judge every Game, and the chart's namespaced
install would hold a permission for Games it never serves.
"""
from __future__ import annotations

from typing import Any, Mapping

from kubernetes.client.rest import ApiException

from peon.shared import status as st
from peon.shared.model import InvalidSpec, parse_game

REASON_VALID = "Resolved"


def game_status(obj: Mapping[str, Any], old: Mapping[str, Any], now: str) -> dict:
    """The status a Game should have: pure, from the object as the cache holds it."""
    gen = int(obj["metadata"].get("generation", 0))
    try:
        game = parse_game(obj)
        cond = st.condition("Valid", True, REASON_VALID,
                            f"image {game.image}, {len(game.ports)} port(s)", gen)
    except InvalidSpec as e:
        cond = st.condition("Valid", False, e.reason, e.message, gen)
    except (KeyError, TypeError, ValueError) as e:  # what the schema should have refused
        cond = st.condition("Valid", False, "InvalidGame", f"the Game cannot be read: {e!r}", gen)
    return {"observedGeneration": gen,
            "conditions": st.merge_conditions(old.get("conditions"), [cond], now)}


def is_judged(obj: Mapping[str, Any]) -> bool:
    """Does the Game's status speak for its current spec?"""
    s = obj.get("status") or {}
    return s.get("observedGeneration") == obj["metadata"].get("generation") and bool(s.get("conditions"))


class GameReconciler:
    def __init__(self, kube, cache, whole_cluster: bool = True) -> None:
        self.kube, self.cache, self.whole_cluster = kube, cache, whole_cluster

    def reconcile(self, name: str) -> None:
        obj = self.cache.games.get(name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        if not self.whole_cluster and not self.cache.gameservers_of_game(obj):
            return  # another operator's, or nobody's yet: a server of ours using it queues it
        old = obj.get("status") or {}
        new = game_status(obj, old, st.now_iso())
        if not st.status_differs(old, new):
            return
        try:
            updated = self.kube.patch_status("Game", None, name, new)
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile
                return
            raise
        self.cache.put(self.cache.games, name, updated, False)
