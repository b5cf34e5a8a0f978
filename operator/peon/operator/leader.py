"""Leader election: with several replicas, exactly one reconciles.

The others keep their watches and caches warm, so when the leader goes the next one takes
over with nothing to re-read. The election is client-go's, as the Kubernetes client implements
it (`kubernetes.leaderelection`): a coordination.k8s.io Lease, taken with optimistic
concurrency and renewed every `retry` seconds; a candidate takes it when it has seen no renewal
for `duration` seconds. kopf's own peering was the first plan, and is not used: replicas of
one Deployment share one priority, and kopf freezes every operator of equal priority.
"""
from __future__ import annotations

import logging
import os
import pathlib
import socket
import threading
import uuid
from typing import Callable

from kubernetes.client import CoordinationV1Api
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from peon.shared import metrics
from peon.shared.kube import Kube

log = logging.getLogger(__name__)
SA_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# client-go's defaults.
DURATION, RENEW_DEADLINE, RETRY = 15, 10, 2


def own_namespace() -> str:
    """The namespace the operator's pod runs in, else `default` (run from a checkout)."""
    return os.environ.get("POD_NAMESPACE") or (
        SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else "default")


class _Coordination(CoordinationV1Api):
    """Lease calls with a deadline: a renewal that hangs must fail in time for the leader to
    notice, or it would go on writing after its Lease expired and another replica took over."""

    def read_namespaced_lease(self, *args, **kwargs):
        return super().read_namespaced_lease(*args, _request_timeout=RETRY * 2, **kwargs)

    def create_namespaced_lease(self, *args, **kwargs):
        return super().create_namespaced_lease(*args, _request_timeout=RETRY * 2, **kwargs)

    def replace_namespaced_lease(self, *args, **kwargs):
        return super().replace_namespaced_lease(*args, _request_timeout=RETRY * 2, **kwargs)


class _Lock(LeaseLock):
    """The Lease, through the operator's own API client. Any failure to reach the API server is
    a failed try (the library expects only API errors, and its thread would die of others).
    Once released it is never taken again by this process, so a renewal racing the release
    cannot take it back."""

    def __init__(self, kube: Kube, name: str, namespace: str, identity: str):
        super().__init__(name, namespace, identity)
        self.api_instance = _Coordination(kube.api)
        self.released = False

    def get(self, name, namespace):
        try:
            return super().get(name, namespace)
        except Exception as e:  # noqa: BLE001 - unreachable, timed out: try again next period
            log.warning("leader election: cannot read the Lease: %s", e)
            return False, e

    def create(self, name, namespace, election_record):
        done = not self.released and self._try(super().create, name, namespace, election_record)
        if done:
            metrics.API_WRITES.labels("create", "Lease").inc()
        return done

    def update(self, name, namespace, updated_record):
        done = not self.released and self._try(super().update, name, namespace, updated_record)
        if done:
            metrics.API_WRITES.labels("update", "Lease").inc()
        return done

    @staticmethod
    def _try(call, *args) -> bool:
        try:
            return call(*args)
        except Exception as e:  # noqa: BLE001
            log.warning("leader election: cannot write the Lease: %s", e)
            return False

    def release(self) -> None:
        """Hand the Lease on at once, as client-go's ReleaseOnCancel does: no holder, so the
        next candidate takes it on its next try instead of waiting out the duration."""
        self.released = True
        for _ in range(3):  # a renewal in flight when `released` was set may bump the version
            try:
                lease = self.api_instance.read_namespaced_lease(self.name, self.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.identity:
                    return
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.api_instance.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("released the leader Lease %s/%s", self.namespace, self.name)
                return
            except Exception as e:  # noqa: BLE001 - the Lease then expires on its own
                if not (isinstance(e, ApiException) and e.status == 409):
                    log.warning("could not release the leader Lease %s/%s: %s", self.namespace,
                                self.name, getattr(e, "reason", e))
                    return
        # Otherwise it expires on its own after DURATION seconds.


class Election:
    """Runs the election in a thread. `on_leading` is called once, when this process becomes
    the leader. Losing the Lease afterwards ends the process: another replica may already be
    writing, and a fresh start as a follower is the only safe state (client-go does the same)."""

    def __init__(self, kube: Kube, name: str, namespace: str, on_leading: Callable[[], None]):
        self.identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.lock = _Lock(kube, name, namespace, self.identity)
        self._on_leading = on_leading
        self.leading = False
        cfg = electionconfig.Config(self.lock, lease_duration=DURATION, renew_deadline=RENEW_DEADLINE,
                                    retry_period=RETRY, onstarted_leading=self._started,
                                    onstopped_leading=self._stopped)
        self._election = leaderelection.LeaderElection(cfg)
        # The library logs every retry of every follower at INFO.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)

    def start(self) -> None:
        log.info("leader election: Lease %s/%s, identity %s", self.lock.namespace, self.lock.name,
                 self.identity)
        threading.Thread(target=self._run, name="leader-election", daemon=True).start()

    def _run(self) -> None:
        try:
            self._election.run()
        except Exception:  # noqa: BLE001
            log.exception("leader election failed")
        # run() returns only when leading ended; a follower or leader without an election
        # can never safely lead again.
        self._stopped()

    def _started(self) -> None:
        self.leading = True
        metrics.LEADING.set(1)
        log.info("leading: this replica (%s) reconciles now", self.identity)
        self._on_leading()

    def _stopped(self) -> None:
        if self.lock.released:
            return
        log.error("lost the leader Lease %s/%s; exiting so that only one replica writes",
                  self.lock.namespace, self.lock.name)
        logging.shutdown()
        os._exit(1)

    def release(self) -> None:
        self.lock.release()
        self.leading = False
        metrics.LEADING.set(0)
