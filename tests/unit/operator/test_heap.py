"""heap.py: the heap is frozen out of the garbage collector's walks as the cache grows."""
import gc

import pytest

from peon.operator.cache import Cache
from peon.operator.heap import Freezer


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # what a test froze goes back to the collector


def test_a_freeze_is_due_once_the_cache_has_grown_by_a_quarter():
    f = Freezer(growth=1.25, least=500)
    assert not f.due(499)  # a small cache is not worth it
    assert f.due(500)
    f.frozen_at = 1000
    assert not f.due(1249)
    assert f.due(1250)


def test_note_freezes_only_when_due_and_remembers_the_size(unfrozen):
    f = Freezer(growth=1.25, least=500)
    gc.unfreeze()
    survivor = [{"n": i} for i in range(100)]  # tracked now, frozen by the freeze
    assert f.note(100) is False and gc.get_freeze_count() == 0
    assert f.note(800) is True
    assert gc.get_freeze_count() >= len(survivor) and f.frozen_at == 800
    before = gc.get_freeze_count()
    assert f.note(900) is False and gc.get_freeze_count() == before


def test_a_freeze_at_a_smaller_size_keeps_the_largest_yet(unfrozen):
    f = Freezer(frozen_at=2000)
    f.freeze(100)  # a start's freeze over a cache that shrank
    assert f.frozen_at == 2000


def test_the_cache_size_counts_every_kind():
    c = Cache()
    assert c.size() == 0
    c.put(c.gameservers, ("g", "a"), {"metadata": {"name": "a", "namespace": "g",
                                                   "resourceVersion": "1"}}, False)
    c.put(c.children, ("Service", "g", "a"), {"kind": "Service", "metadata": {
        "name": "a", "namespace": "g", "resourceVersion": "2"}}, False)
    assert c.size() == 2
