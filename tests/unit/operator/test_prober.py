"""The prober: each server asked at its interval, at most N at once, off the reconcile workers;
the reconcile is woken only when the answer changed."""
import asyncio

from peon.shared.players import Players
from peon.operator.prober import Prober, Target


def run(coro):
    return asyncio.run(coro)


def test_a_server_is_asked_at_once_then_at_its_interval_and_wakes_only_on_change():
    async def scenario():
        answers = {"a": Players(0, 10)}
        asked, woken = [], []

        async def ask(t):
            asked.append(t.host)
            return answers[t.host]

        p = Prober(woken.append, ask=ask)
        p.want(("ns", "a"), Target("a2s", "a", 1, interval=30))
        await asyncio.gather(*p.ask_due(100.0))
        assert asked == ["a"] and woken == [("ns", "a")] and p.latest(("ns", "a")) == Players(0, 10)
        assert p.ask_due(110.0) == []  # not due yet
        await asyncio.gather(*p.ask_due(130.0))  # due, same answer: asked, nobody woken
        assert asked == ["a", "a"] and woken == [("ns", "a")]
        answers["a"] = Players(2, 10)  # players came
        await asyncio.gather(*p.ask_due(160.0))
        assert woken == [("ns", "a"), ("ns", "a")] and p.latest(("ns", "a")).online == 2
    run(scenario())


def test_concurrency_is_bounded_and_a_forgotten_server_is_not_answered_for():
    async def scenario():
        running, peak = 0, 0
        release = asyncio.Event()

        async def ask(t):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            return Players(1, 4)

        woken = []
        p = Prober(woken.append, concurrency=3, ask=ask)
        for i in range(10):
            p.want(("ns", f"s{i}"), Target("a2s", f"h{i}", 1, interval=5))
        tasks = p.ask_due(0.0)
        await asyncio.sleep(0.01)
        assert peak == 3
        p.forget(("ns", "s0"))
        release.set()
        await asyncio.gather(*tasks)
        assert peak == 3 and ("ns", "s0") not in woken and len(woken) == 9
        assert p.latest(("ns", "s0")) is None
    run(scenario())


def test_a_moved_target_is_asked_again_at_once():
    async def scenario():
        asked = []

        async def ask(t):
            asked.append(t.host)
            return None  # no answer: unknown, never "nobody is on"

        p = Prober(lambda k: None, ask=ask)
        p.want("k", Target("a2s", "old", 1, interval=60))
        await asyncio.gather(*p.ask_due(0.0))
        p.want("k", Target("a2s", "new", 1, interval=60))
        await asyncio.gather(*p.ask_due(1.0))
        assert asked == ["old", "new"] and p.latest("k") is None
    run(scenario())


def test_a_query_that_raises_is_unknown_and_never_escapes():
    async def scenario():
        unhandled = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: unhandled.append(c))

        async def ask(t):
            raise RuntimeError("a library's surprise")

        woken = []
        p = Prober(woken.append, ask=ask, tick=0.01)
        p.want("k", Target("minecraft", "h", 1, interval=60))
        p.start()
        await asyncio.sleep(0.1)
        await p.stop()
        assert p.latest("k") is None and woken == ["k"] and unhandled == []
        assert p.ask_due(1e9)  # still asked at its next interval (not stuck busy)
    run(scenario())
