"""Rollouts.run with a remote run: unrecorded runs go to it with the given values and are
judged like the module's; recorded runs never do (their graph is needed here)."""

from __future__ import annotations

from optiforge.agents.optim.rollouts import Rollouts


def test_unrecorded_runs_go_to_the_remote_run_and_are_judged_alike():
    here: list[str] = []
    there: list[tuple[dict, str, str]] = []

    def module(x):  # a sync module: the remote path still runs its calls concurrently
        here.append(x)
        return x.upper()

    async def remote(values, x, y):
        there.append((values, x, y))
        if x == "boom":
            raise RuntimeError("worker-side failure")
        return f"{values['p']}:{x}".upper()

    judge = lambda out, y: (1.0 if out.endswith(y) else 0.0, f"got {out}")  # noqa: E731
    r = Rollouts(module, judge, workers=2, error_score=-1.0)
    items = [(0, ("a", "A")), (1, ("b", "X")), (2, ("boom", "B"))]

    remote_out = r.run(items, record=False, remote=remote, values={"p": "v1"})
    assert here == [] and sorted(x for _, x, _ in there) == ["a", "b", "boom"]
    assert all(values == {"p": "v1"} for values, _, _ in there)
    scores = [e.score for e, _ in remote_out]
    assert scores == [1.0, 0.0, -1.0]  # judged, and a failure is an error evaluation
    assert remote_out[0][0].output == "V1:A" and remote_out[1][0].feedback == "got V1:B"
    assert "worker-side failure" in remote_out[2][0].error

    there.clear()
    recorded = r.run(items[:2], record=True, remote=remote, values={"p": "v1"})
    assert there == [] and here == ["a", "b"]  # a recorded run stays here
    assert [e.output for e, _ in recorded] == ["A", "B"]
