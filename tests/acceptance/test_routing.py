"""Joins, splits and pruning end to end (issue 10): DISCRIMINATOR, N_OF_M, MULTI_MERGE, OR splits, cancel_remaining."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from stabilize_aio import (
    DefinitionError,
    Engine,
    JoinType,
    SplitType,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)

S = WorkflowStatus


class App:
    """An engine with tasks ``fast`` (returns at once), ``slow`` (waits for :attr:`gate`), ``sync``
    (waits until :attr:`together` tasks are in it, so they return in the same instant) and ``score``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[str] = []
        self.gate = anyio.Event()
        self.slow_started = anyio.Event()
        self.cancelled: list[str] = []
        self.merges: list[tuple[int, str, str]] = []
        self.together = 2
        self._arrived = 0
        self._all_in = anyio.Event()

        @engine.task("fast")
        async def fast(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            if "_merge_index" in stage.context:  # a MULTI_MERGE run: which arrival it is, and what it sees
                ctx = stage.context
                self.merges.append((ctx["_merge_index"], ctx["_merge_from"], ctx["who"]))
            return TaskResult.success(
                outputs={
                    stage.ref_id: stage.ref_id,
                    "n": 1,
                    "merge": stage.context.get("_merge_index"),
                    "who": stage.ref_id,
                }
            )

        @engine.task("slow")
        async def slow(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            self.slow_started.set()
            try:
                await self.gate.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(stage.ref_id)
                raise
            return TaskResult.success(outputs={stage.ref_id: "late"})

        @engine.task("sync")
        async def sync(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            self._arrived += 1
            if self._arrived >= self.together:
                self._all_in.set()
            await self._all_in.wait()
            return TaskResult.success(outputs={stage.ref_id: True})

        @engine.task("score")
        async def score(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            return TaskResult.success(outputs={"score": stage.context["given"]})

    async def run(self, *stages: Stage, context: dict[str, Any] | None = None) -> WorkflowView:
        handle = await self.engine.submit(Workflow(application="t", name="w", stages=list(stages)), context=context)
        view = await handle.wait(timeout=10)
        await self.engine.wait_idle()
        return view

    async def history(self, wid: str) -> list[tuple[str, str | None]]:
        return [(e.kind, e.stage) for e in await self.engine.history(wid)]


@asynccontextmanager
async def app(db_url: str) -> AsyncIterator[App]:
    engine = Engine(db_url)
    a = App(engine)
    async with engine:
        yield a


def statuses(view: WorkflowView) -> dict[str, WorkflowStatus]:
    return {s.ref_id: s.status for s in view.stages}


async def test_a_discriminator_that_is_the_last_stage_ends_its_run_after_the_slow_branch(db_url: str) -> None:
    """First of N: D runs once, on the fast branch; the run stays RUNNING until C ends, then SUCCEEDS; C does
    not start D again (stabilize's liveness bug left this run RUNNING forever)."""
    async with app(db_url) as a:
        wf = Workflow(
            application="t",
            name="w",
            stages=[
                Stage("a", "fast"),
                Stage("b", "fast", requisites=["a"]),
                Stage("c", "slow", requisites=["a"]),
                Stage("d", "fast", requisites=["b", "c"], join_type=JoinType.DISCRIMINATOR),
            ],
        )
        handle = await a.engine.submit(wf)
        with anyio.fail_after(10):  # poll the store until d's end is committed (c blocks: no wait_idle)
            while (await handle.get()).stage("d").status is not S.SUCCEEDED:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert (await handle.get()).status is S.RUNNING  # c is still running
        a.gate.set()
        view = await handle.wait(timeout=10)
        await a.engine.wait_idle()
        assert view.status is S.SUCCEEDED
        assert statuses(view) == dict.fromkeys("abcd", S.SUCCEEDED)
        assert a.calls.count("d") == 1
        history = await a.history(handle.workflow_id)
        assert history.count(("stage.started", "d")) == 1
        assert history[-1] == ("workflow.completed", None)


async def test_cancel_remaining_cancels_the_slow_branch_for_real_and_the_run_succeeds(db_url: str) -> None:
    """cancel_remaining=True: the slow branch's coroutine gets CancelledError, it ends SKIPPED (pruned), and
    the stage only it fed is pruned too; the run SUCCEEDS, never CANCELED."""
    async with app(db_url) as a:
        view = await a.run(
            Stage("a", "fast"),
            Stage("c1", "slow", requisites=["a"]),
            Stage("c", "fast", requisites=["c1"]),
            Stage("b", "fast", requisites=["a"]),
            Stage("d2", "fast", requisites=["b", "c"], join_type=JoinType.DISCRIMINATOR, cancel_remaining=True),
            Stage("after_c", "fast", requisites=["c"]),
        )
        assert view.status is S.SUCCEEDED
        assert a.cancelled == ["c1"]
        st = statuses(view)
        assert (st["c1"], st["c"], st["after_c"]) == (S.SKIPPED, S.SKIPPED, S.SKIPPED)
        assert all(view.stage(r).pruned for r in ("c1", "c", "after_c"))
        assert (st["a"], st["b"], st["d2"]) == (S.SUCCEEDED,) * 3
        assert "c" not in a.calls
        assert "after_c" not in a.calls


async def test_two_upstreams_finishing_in_the_same_instant_start_the_join_once(db_url: str) -> None:
    """b and c return together (their results committed in one turn or two): an AND join and a
    DISCRIMINATOR start once each."""
    async with app(db_url) as a:
        view = await a.run(
            Stage("a", "fast"),
            Stage("b", "sync", requisites=["a"]),
            Stage("c", "sync", requisites=["a"]),
            Stage("j", "fast", requisites=["b", "c"]),
            Stage("first", "fast", requisites=["b", "c"], join_type=JoinType.DISCRIMINATOR),
        )
        assert view.status is S.SUCCEEDED
        assert (a.calls.count("j"), a.calls.count("first")) == (1, 1)


async def test_n_of_m_runs_on_the_nth_arrival_and_is_unreachable_when_too_few_can_arrive(db_url: str) -> None:
    async with app(db_url) as a:
        view = await a.run(
            Stage("r1", "fast"),
            Stage("r2", "fast"),
            Stage("r3", "slow"),
            Stage(
                "q",
                "fast",
                requisites=["r1", "r2", "r3"],
                join_type=JoinType.N_OF_M,
                join_threshold=2,
                cancel_remaining=True,
            ),
        )
        assert view.status is S.SUCCEEDED
        assert statuses(view)["r3"] is S.SKIPPED
        assert a.cancelled == ["r3"]
        # two branches stop (fail_workflow=False): 2 of 3 can no longer arrive
        view = await a.run(
            Stage("r1", "fast"),
            Stage("r2", "score", fail_workflow=False),  # no "given": fails, STOPPED
            Stage("r3", "score", fail_workflow=False),
            Stage("q", "fast", requisites=["r1", "r2", "r3"], join_type=JoinType.N_OF_M, join_threshold=2),
        )
        assert view.status is S.TERMINAL
        q = view.stage("q")
        assert q.status is S.TERMINAL
        assert q.error is not None
        assert q.error.type == "JoinError"
        assert "needs 2 of 3" in q.error.message


async def test_multi_merge_runs_once_per_arrival_and_its_downstream_once(db_url: str) -> None:
    async with app(db_url) as a:
        view = await a.run(
            Stage("a", "fast"),
            Stage("b", "fast"),
            Stage("c", "fast"),
            Stage("m", "fast", requisites=["a", "b", "c"], join_type=JoinType.MULTI_MERGE),
            Stage("after", "fast", requisites=["m"]),
        )
        assert view.status is S.SUCCEEDED
        assert a.calls.count("m") == 3
        assert a.calls.count("after") == 1
        assert view.stage("m").outputs["merge"] == 3
        assert [k for k, _, _ in a.merges] == [1, 2, 3]
        assert sorted(f for _, f, _ in a.merges) == ["a", "b", "c"]
        assert all(frm == who for _, frm, who in a.merges)  # each run sees its own arrival's outputs on top
        assert view.stage("m").generation == 2
        history = await a.history(view.workflow_id)
        assert history.count(("stage.completed", "m")) == 3
        assert history.index(("stage.started", "after")) > max(
            i for i, h in enumerate(history) if h == ("stage.completed", "m")
        )


def split_stages(join: JoinType = JoinType.OR) -> list[Stage]:
    return [
        Stage(
            "route", "score", split_type=SplitType.OR, split_conditions={"fast": "score > 0.8", "slow": "score <= 0.8"}
        ),
        Stage("fast", "fast", requisites=["route"]),
        Stage("slow", "fast", requisites=["route"]),
        Stage("slow2", "fast", requisites=["slow"]),
        Stage("audit", "fast", requisites=["route"]),  # no condition: always taken
        Stage("join", "fast", requisites=["fast", "slow2"], join_type=join),
    ]


@pytest.mark.parametrize("join", [JoinType.OR, JoinType.AND])
async def test_an_or_split_takes_the_branches_whose_conditions_hold_and_prunes_the_rest(
    db_url: str, join: JoinType
) -> None:
    async with app(db_url) as a:
        view = await a.run(*split_stages(join), context={"given": 0.9})
        assert view.status is S.SUCCEEDED
        st = statuses(view)
        assert (st["fast"], st["audit"], st["join"]) == (S.SUCCEEDED,) * 3
        assert (st["slow"], st["slow2"]) == (S.SKIPPED, S.SKIPPED)
        assert view.stage("slow2").pruned
        assert sorted(a.calls) == ["audit", "fast", "join", "route"]


async def test_an_or_split_that_takes_nothing_prunes_its_whole_downstream(db_url: str) -> None:
    async with app(db_url) as a:
        view = await a.run(
            Stage("route", "score", split_type=SplitType.OR, split_conditions={"x": "score > 1", "y": "score < 0"}),
            Stage("x", "fast", requisites=["route"]),
            Stage("y", "fast", requisites=["route"]),
            Stage("z", "fast", requisites=["x", "y"]),
            context={"given": 0.5},
        )
        assert view.status is S.SUCCEEDED
        assert statuses(view) == {"route": S.SUCCEEDED, "x": S.SKIPPED, "y": S.SKIPPED, "z": S.SKIPPED}


async def test_a_split_condition_that_fails_at_run_time_fails_the_split_stage(db_url: str) -> None:
    async with app(db_url) as a:
        view = await a.run(
            Stage("route", "score", split_type=SplitType.OR, split_conditions={"x": "missing > 1"}),
            Stage("x", "fast", requisites=["route"]),
            context={"given": 0.5},
        )
        assert view.status is S.TERMINAL
        err = view.stage("route").error
        assert err is not None
        assert err.type == "ConditionError"
        assert "missing" in err.message
        assert statuses(view)["x"] is S.NOT_STARTED


def test_routing_mistakes_fail_when_the_workflow_is_built() -> None:
    a, b = Stage("a", "t"), Stage("b", "t")
    with pytest.raises(DefinitionError, match=r"'q'.*join_threshold 3 cannot be reached with 2"):
        Workflow(
            application="t",
            name="w",
            stages=[a, b, Stage("q", "t", requisites=["a", "b"], join_type=JoinType.N_OF_M, join_threshold=3)],
        )
    with pytest.raises(DefinitionError, match=r"'a'.*names 'b', which is not a stage directly downstream"):
        Workflow(
            application="t", name="w", stages=[Stage("a", "t", split_type=SplitType.OR, split_conditions={"b": "x"}), b]
        )
    with pytest.raises(DefinitionError, match=r"'s'.*does not parse"):
        Stage("s", "t", split_type="or", split_conditions={"b": "x ==="})
    with pytest.raises(DefinitionError, match="cancel_remaining is for DISCRIMINATOR and N_OF_M"):
        Stage("j", "t", requisites=["a"], cancel_remaining=True)
    with pytest.raises(DefinitionError, match="N_OF_M join needs join_threshold >= 1"):
        Stage("j", "t", requisites=["a"], join_type=JoinType.N_OF_M)
    with pytest.raises(DefinitionError, match="split_conditions need split_type"):
        Stage("s", "t", split_conditions={"b": "x"})
    with pytest.raises(DefinitionError, match="unknown join_type"):
        Stage("j", "t", requisites=["a"], join_type="XOR")
