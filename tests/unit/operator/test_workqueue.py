"""The work queue: one run per key at a time, adds coalesced."""
import asyncio

from peon.operator.workqueue import WorkQueue


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


def test_an_add_from_a_reconcile_thread_wakes_a_waiting_worker():
    """With no timer pending, an event loop sleeps until something wakes it: an add made
    straight from another thread left the worker asleep (the key sat in the queue)."""
    import threading
    got, ready = [], threading.Event()
    loop = asyncio.new_event_loop()
    q = WorkQueue()

    async def worker():
        task = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)  # the worker is waiting on the loop
        ready.set()
        got.append(await task)

    runner = threading.Thread(target=loop.run_until_complete, args=(worker(),), daemon=True)
    runner.start()
    assert ready.wait(10)
    q.add(("GameServer", "ns", "a"))  # from this thread, as a reconcile thread does
    runner.join(10)
    woken = not runner.is_alive()
    if not woken:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        runner.join(10)
    assert woken and got == [("GameServer", "ns", "a")], "the waiting worker was never woken"


def test_news_soon_is_gathered_into_one_run_and_an_add_now_takes_its_place():
    async def scenario():
        q = WorkQueue()
        q.bind(asyncio.get_running_loop())
        key = ("GameServer", "ns", "a")
        q.add_soon(key, 0.05)  # a pod running
        q.add_soon(key, 0.05)  # ... ready, its Deployment's ready count: the same burst
        assert q._queue.qsize() == 0 and not q.idle()
        await asyncio.sleep(0.1)
        assert q._queue.qsize() == 1
        assert await q.get() == key
        q.done(key)
        assert q.idle()
        # An add now (a spec change) does not wait, and the gathering it overtakes adds no run.
        q.add_soon(key, 0.05)
        q.add(key)
        assert q._queue.qsize() == 1
        await q.get()
        await asyncio.sleep(0.1)
        q.done(key)
        assert q._queue.qsize() == 0 and q.idle()
    asyncio.run(scenario())


def test_news_from_a_stream_thread_while_its_server_is_reconciled_runs_it_again():
    """A stream's thread skips handing news to the loop when the key waits already; news
    during a reconcile (the key active, not waiting) must still bring one more run."""
    async def scenario():
        q = WorkQueue()
        loop = asyncio.get_running_loop()
        q.bind(loop)
        key = ("GameServer", "ns", "a")

        def from_stream():
            q.add_soon(key, 0.05)

        await loop.run_in_executor(None, from_stream)
        await loop.run_in_executor(None, from_stream)  # the same burst: gathered
        await asyncio.sleep(0.1)
        assert await q.get() == key
        await loop.run_in_executor(None, from_stream)  # news while it is reconciled
        await asyncio.sleep(0.1)
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == key
        q.done(key)
        await asyncio.sleep(0.1)
        assert q.idle() and q._queue.qsize() == 0
    asyncio.run(scenario())
