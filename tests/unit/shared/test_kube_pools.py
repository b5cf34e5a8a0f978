"""The watch streams' connections are pooled apart from the reconciles' (Kube.apart)."""
from kubernetes.client import ApiClient, Configuration

from peon.shared.kube import Kube


def test_a_kube_apart_has_its_own_pool_of_the_size_asked_and_writes_as_the_same_agent():
    cfg = Configuration()
    cfg.host = "https://127.0.0.1:6443"
    cfg.connection_pool_maxsize = 32
    workers = Kube(ApiClient(cfg), agent="peon-operator")
    streams = workers.apart(60)
    assert streams.api is not workers.api
    assert streams.api.rest_client.pool_manager is not workers.api.rest_client.pool_manager
    assert streams.api.rest_client.pool_manager.connection_pool_kw["maxsize"] == 60
    assert workers.api.rest_client.pool_manager.connection_pool_kw["maxsize"] == 32  # untouched
    assert streams.api.configuration.host == cfg.host
    assert streams.api.user_agent == workers.api.user_agent
    assert streams.api.user_agent.startswith("peon-operator/")
    assert streams.field_manager == workers.field_manager == "peon-operator"
