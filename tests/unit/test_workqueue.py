"""The work queue: one run per key at a time, adds coalesced."""
import asyncio

from peon.workqueue import WorkQueue


def test_work_queue_never_runs_a_key_twice_at_once_and_coalesces():
    async def scenario():
        q = WorkQueue()
        q.add(("ns", "a"))
        q.add(("ns", "a"))  # coalesced while pending
        key = await q.get()
        q.add(("ns", "a"))  # while active: remembered, not queued twice
        q.add(("ns", "a"))
        assert q._queue.qsize() == 0
        q.done(key)
        assert q._queue.qsize() == 1
        await q.get()
        q.done(key)
        assert q.idle()
    asyncio.run(scenario())
