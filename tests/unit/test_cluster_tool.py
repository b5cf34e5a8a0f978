"""tools/cluster's join: a real node whose first start fails is made again once, and a machine
that fails twice is reported unable (the bed's tests then skip with the reason)."""
import importlib.machinery
import importlib.util
import pathlib

import pytest

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "cluster"


@pytest.fixture(scope="module")
def cluster():
    loader = importlib.machinery.SourceFileLoader("peon_cluster_tool", str(TOOL))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


class Node:
    """A node whose starts fail with the given errors, then succeed."""
    name = "real-node-0"

    def __init__(self, failures):
        self.failures, self.ups, self.downs, self.made = list(failures), 0, 0, False

    def present(self):
        return self.made

    def down(self, kubectl):
        self.downs, self.made = self.downs + 1, False

    def up(self, kubectl, **helpers):
        self.ups, self.made = self.ups + 1, True
        if self.failures:
            raise self.failures.pop(0)


@pytest.fixture
def no_wait(cluster, monkeypatch):
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)


def test_a_kubelet_that_exits_once_is_started_again_from_nothing(cluster, no_wait):
    node = Node([cluster.realnode.StartFailed("node real-node-0 Ready: the process exited")])
    cluster.join(node, None, {})
    assert (node.ups, node.downs) == (2, 1)  # the half-made node went before the second try


def test_a_node_that_fails_to_start_twice_is_reported(cluster, no_wait):
    node = Node([cluster.realnode.StartFailed("first"), cluster.realnode.StartFailed("second")])
    with pytest.raises(cluster.realnode.StartFailed, match="second"):
        cluster.join(node, None, {})
    assert node.ups == 2


def test_a_machine_without_what_a_node_needs_is_not_tried_again(cluster, no_wait):
    node = Node([cluster.realnode.Unavailable("containerd is not installed")])
    with pytest.raises(cluster.realnode.Unavailable, match="containerd"):
        cluster.join(node, None, {})
    assert node.ups == 1
