"""Leader election's Lease calls when the API server cannot be reached: each is a failed try,
never an exception that would kill the election thread, and never a hang."""
import socket
import threading

from kubernetes.client import ApiClient, Configuration

from peon.shared.kube import Kube
from peon.operator.leader import _Lock, own_namespace


def kube_at(port: int) -> Kube:
    cfg = Configuration()
    cfg.host = f"https://127.0.0.1:{port}"
    cfg.verify_ssl = False
    cfg.retries = False
    return Kube(ApiClient(cfg))


def tries(lock: _Lock) -> list:
    from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
    from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta
    record = LeaderElectionRecord(lock.identity, "15", "2026-11-28 10:00:00", "2026-11-28 10:00:00")
    lock.lease_reference = V1Lease(metadata=V1ObjectMeta(name="l"), spec=V1LeaseSpec())
    found, _ = lock.get("l", "ns")
    return [found, lock.create("l", "ns", record), lock.update("l", "ns", record)]


def test_an_unreachable_api_server_is_a_failed_try():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    assert tries(_Lock(kube_at(port), "l", "ns", "me")) == [False, False, False]


def test_an_api_server_that_never_answers_is_a_failed_try_not_a_hang():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections, never says a word
    result = []
    t = threading.Thread(target=lambda: result.append(
        tries(_Lock(kube_at(server.getsockname()[1]), "l", "ns", "me"))), daemon=True)
    t.start()
    t.join(60)
    server.close()
    assert result == [[False, False, False]], "a Lease call hung"


def test_a_released_lock_is_never_taken_again():
    lock = _Lock(kube_at(1), "l", "ns", "me")
    lock.released = True
    assert tries(lock)[1:] == [False, False]


def test_own_namespace(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "peon-system")
    assert own_namespace() == "peon-system"
