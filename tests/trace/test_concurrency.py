"""Recording state per thread / asyncio task, and freeing graphs."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

from optiforge.trace import bundle, is_tracing, no_trace, node, topological_order


@bundle
def work(x, tag):
    return f"{x}+{tag}"


@bundle
async def awork(x, tag):
    await asyncio.sleep(0)
    return f"{x}+{tag}"


def _chain_values(out):
    return {n.value for n in topological_order(out) if n.parents == ()}


def test_threads_record_separate_graphs_and_no_trace_stays_local():
    results = {}
    barrier = threading.Barrier(4)

    def run(tag, quiet):
        barrier.wait()
        x = node(f"start-{tag}")
        if quiet:
            with no_trace():
                barrier.wait()
                for _ in range(200):
                    x = work(x, tag)
                results[tag] = (x, is_tracing())
        else:
            barrier.wait()
            for _ in range(200):
                x = work(x, tag)
            results[tag] = (x, is_tracing())

    threads = [threading.Thread(target=run, args=(t, t == "q")) for t in ("a", "b", "c", "q")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tag in ("a", "b", "c"):
        out, tracing_inside = results[tag]
        assert tracing_inside
        assert _chain_values(out) == {f"start-{tag}", tag}
        assert len(topological_order(out)) == 200 * 2 + 1
    quiet_out, flag = results["q"]
    assert flag is False and quiet_out.parents == ()
    assert is_tracing()


async def test_asyncio_tasks_record_separate_graphs():
    async def run(tag, quiet):
        x = node(f"start-{tag}")
        if quiet:
            with no_trace():
                for _ in range(50):
                    x = await awork(x, tag)
                    await asyncio.sleep(0)
                return x, is_tracing()
        for _ in range(50):
            x = await awork(x, tag)
            await asyncio.sleep(0)
        return x, is_tracing()

    outs = await asyncio.gather(*(run(t, t == "q") for t in ("a", "b", "q")))
    for (out, flag), tag in zip(outs[:2], ("a", "b"), strict=True):
        assert flag
        assert _chain_values(out) == {f"start-{tag}", tag}
        assert len(topological_order(out)) == 50 * 2 + 1
    assert outs[2][1] is False and outs[2][0].parents == ()
    assert is_tracing()


def test_dropped_graphs_are_freed_without_gc():
    gc.disable()
    try:
        p = node(1, trainable=True)
        x = p
        refs = []
        for _ in range(1000):
            x = x + 1
            refs.append(weakref.ref(x))
        del x
        assert all(r() is None for r in refs)  # freed by reference counting alone
        assert p.value == 1
    finally:
        gc.enable()


def test_feedback_records_keep_graphs_until_zero_feedback():
    p = node(1, trainable=True)
    y = p * 2
    ref = weakref.ref(y)
    y.backward("fb")
    del y
    assert ref() is not None  # the optimizer still needs the subgraph
    p.zero_feedback()
    gc.collect()
    assert ref() is None


def test_long_chain_is_freed_without_recursion_error():
    x = node(0)
    for _ in range(200_000):
        x = x + 1
    last = weakref.ref(x)
    del x
    assert last() is None


def test_parallel_backward_on_a_shared_parameter_loses_no_feedback():
    p = node(1, trainable=True)

    def run():
        for _ in range(300):
            (p * 2).backward(1)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.feedback == 1800
    assert len(p.feedback_records) == 1800


def test_threads_share_one_code_parameter_per_instance():
    from optiforge.trace import Module

    class Agent(Module):
        @bundle(trainable=True)
        def step(self, x):
            return x + 1

    for _ in range(20):
        agent = Agent()
        barrier = threading.Barrier(6)
        outs = []

        def call(agent=agent, barrier=barrier, outs=outs):
            barrier.wait()
            outs.append(agent.step(node(1)))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = {id(o.parents[-1]) for o in outs}
        assert codes == {id(agent.step.code)}
