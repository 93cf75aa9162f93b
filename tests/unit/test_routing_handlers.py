"""Unit tests of the routing rules on the pure handlers: joins, cancel_remaining, MULTI_MERGE, OR splits, jumps.

No engine, no I/O: each turn is folded on a :class:`Turn` over a
:class:`WorkflowState`, and the tests read its Commit (what the store would
see) and Effects (what would follow the commit). After every turn the harness
also checks the join counters three ways: the turn's own overlay, the state
after ``apply(commit)``, and a state rebuilt from copies of the committed
records must agree (the O(1) bookkeeping never drifts from what the rows say).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from runs import initial_state
from test_handlers import Harness, Step, ok, only

from stabilize_aio import JoinType, SplitType, Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.dag.joins import Counts
from stabilize_aio.handlers import apply, begin
from stabilize_aio.messages.durable import RunTask
from stabilize_aio.messages.memory import Message
from stabilize_aio.model.records import StageRun
from stabilize_aio.patterns import while_loop
from stabilize_aio.state.turn import Turn
from stabilize_aio.state.workflow import WorkflowState

S = WorkflowStatus


def counts(state: WorkflowState, of: Callable[[int], Counts] | None = None) -> tuple[list[Counts], int]:
    """Every stage's join counts and the live stages, as ``state`` has them (or as ``of`` reads them)."""
    if of is None:

        def of(i: int) -> Counts:
            req = len(state.specs[i].requisites)
            return Counts(
                req,
                state.outstanding[i],
                state.dead[i],
                state.halted[i],
                state.runs[i].fired,
                len(state.runs[i].arrivals),
            )

    return [of(i) for i in range(len(state.specs))], state.active


class Routing(Harness):
    """The handlers' Harness, folding each turn on a Turn and checking the counters after it."""

    def __init__(self, *stages: Stage, inputs: dict[str, Any] | None = None, max_jumps: int = 10) -> None:
        super().__init__(*stages, inputs=inputs)
        wf = Workflow(application="app", name="wf", stages=list(stages), max_jumps=max_jumps)
        self.state = initial_state(wf, "wf-1", inputs or {})

    def _turn(self, fold: Callable[[Turn], None]) -> Step:
        turn = Turn(self.state, self.now)
        fold(turn)
        overlay = [turn.counts(i) for i in range(len(self.state.specs))], turn.active
        step = self._applied(turn.commit, turn.effects)
        st = self.state
        rebuilt = WorkflowState(st.record, list(st.specs), list(st.runs))  # from copies of the committed records
        assert counts(rebuilt) == counts(st), "apply(commit) left counters a state rebuilt from its runs does not have"
        assert counts(rebuilt) == overlay, "the turn decided from counts the committed state does not have"
        return step

    def start(self) -> Step:
        return self._turn(begin)

    def send(self, message: Message) -> Step:
        return self._turn(lambda turn: apply(turn, message))

    # reading -----------------------------------------------------------------
    def i(self, ref: str) -> int:
        return self.state.stage_index(ref)

    def run(self, ref: str) -> StageRun:
        return self.state.runs[self.i(ref)]

    def run_status(self) -> WorkflowStatus:
        """The run's status (a call: the type checker keeps no narrowing of it between turns)."""
        return self.state.record.status

    def generations(self) -> dict[str, int]:
        return {spec.ref_id: run.generation for spec, run in zip(self.state.specs, self.state.runs, strict=True)}

    def refs(self, runs: list[RunTask]) -> list[str]:
        return [self.state.specs[r.stage].ref_id for r in runs]

    def by_ref(self, step: Step) -> dict[str, RunTask]:
        """The RunTasks a turn dispatches, by stage ref id."""
        return {self.state.specs[r.stage].ref_id: r for r in step.dispatch}

    def written(self, step: Step) -> dict[str, WorkflowStatus]:
        """The stages a turn writes, by ref id, with the status it writes."""
        return {self.state.specs[i].ref_id: run.status for i, run in step.stages.items()}


def events(step: Step) -> list[tuple[str, str | None]]:
    return [(e.kind, e.stage) for e in step.events]


def jumped(h: Routing) -> list[str | None]:
    """The messages of every stage.jumped event the run recorded so far."""
    return [e.message for step in h.log for e in step.events if e.kind == "stage.jumped"]


# joins -------------------------------------------------------------------------------


def test_a_discriminator_starts_on_the_first_arrival_and_a_later_arrival_does_nothing() -> None:
    h = Routing(Stage("a", "t"), Stage("b", "t"), Stage("d", "t", requisites=["a", "b"], join_type="DISCRIMINATOR"))
    ra, rb = h.start().dispatch
    t1 = h.done(ra, ok(x=1))
    assert {"a": S.SUCCEEDED, "d": S.RUNNING} == h.written(t1)
    assert ["d"] == h.refs(t1.dispatch)
    assert [("stage.completed", "a"), ("stage.started", "d")] == events(t1)
    t2 = h.done(rb, ok())  # d is running: b's arrival changes nothing of it
    assert ({"b": S.SUCCEEDED}, [], [("stage.completed", "b")]) == (h.written(t2), t2.dispatch, events(t2))
    assert ([rb.id], [], None) == (t2.consumed, t2.emitted, t2.workflow)
    t3 = h.done(h.by_ref(t1)["d"], ok())
    assert (S.SUCCEEDED, True) == (h.run_status(), t3.finished)


def test_a_discriminator_arrival_after_it_ended_starts_nothing_and_ends_the_run() -> None:
    h = Routing(
        Stage("a", "t"),
        Stage("b", "t"),
        Stage("d", "t", requisites=["a", "b"], join_type="DISCRIMINATOR"),
        Stage("after", "t", requisites=["d"]),
    )
    ra, rb = h.start().dispatch
    rd = h.by_ref(h.done(ra, ok()))["d"]
    rafter = h.by_ref(h.done(rd, ok()))["after"]
    h.done(rafter, ok())
    assert S.RUNNING == h.run_status()  # b still runs
    t = h.done(rb, ok())
    assert ({"b": S.SUCCEEDED}, [], True) == (h.written(t), t.dispatch, t.finished)
    assert S.SUCCEEDED == h.run_status()
    assert [("stage.completed", "b"), ("workflow.completed", None)] == events(t)
    assert (0, 1) == (h.run("d").generation, sum(1 for s in h.log for e in s.events if e.key == "stage.started:2:0"))


def test_n_of_m_starts_on_the_nth_arrival_only() -> None:
    h = Routing(
        Stage("r1", "t"),
        Stage("r2", "t"),
        Stage("r3", "t"),
        Stage("q", "t", requisites=["r1", "r2", "r3"], join_type=JoinType.N_OF_M, join_threshold=2),
    )
    r1, r2, r3 = h.start().dispatch
    t1 = h.done(r1, ok())
    assert ({"r1": S.SUCCEEDED}, []) == (h.written(t1), t1.dispatch)
    t2 = h.done(r2, ok())
    assert ({"r2": S.SUCCEEDED, "q": S.RUNNING}, ["q"]) == (h.written(t2), h.refs(t2.dispatch))
    t3 = h.done(r3, ok())
    assert ({"r3": S.SUCCEEDED}, []) == (h.written(t3), t3.dispatch)
    h.done(h.by_ref(t2)["q"], ok())
    assert S.SUCCEEDED == h.run_status()


def unreachable_stages(*, fail_workflow: bool) -> list[Stage]:
    return [
        Stage("r1", "t"),
        Stage("r2", "t", fail_workflow=False),
        Stage("r3", "t", fail_workflow=False),
        Stage(
            "q",
            "t",
            requisites=["r1", "r2", "r3"],
            join_type=JoinType.N_OF_M,
            join_threshold=2,
            fail_workflow=fail_workflow,
        ),
    ]


def test_an_unreachable_n_of_m_fails_with_a_join_error_and_halts_the_run() -> None:
    """Two of three requisites stop: 2 of 3 can no longer arrive; q fails TERMINAL, r1's call is cancelled."""
    h = Routing(*unreachable_stages(fail_workflow=True))
    r1, r2, r3 = h.start().dispatch
    t1 = h.done(r2, TaskResult.terminal("no"))
    assert ({"r2": S.STOPPED}, S.RUNNING) == (h.written(t1), h.run_status())  # 1 + 1 can still arrive
    t2 = h.done(r3, TaskResult.terminal("no"))
    assert {"r3": S.STOPPED, "q": S.TERMINAL, "r1": S.CANCELED} == h.written(t2)
    error = h.run("q").error
    assert error is not None
    assert "JoinError" == error.type
    assert "stage 'q': its N_OF_M join needs 2 of 3 requisites, and only 1 can still arrive" == error.message
    assert ([r1.id], {r3.id, r1.id}, [], True) == (t2.cancel_runs, set(t2.consumed), t2.dispatch, t2.finished)
    assert S.TERMINAL == h.run_status()
    assert [
        ("task.failed", "r3"),
        ("stage.completed", "r3"),
        ("stage.started", "q"),
        ("stage.completed", "q"),
        ("stage.completed", "r1"),
        ("workflow.completed", None),
    ] == events(t2)
    assert h.done(r1, ok()).empty  # the cancelled call's late result


def test_an_unreachable_n_of_m_without_fail_workflow_is_skipped_and_the_run_goes_on() -> None:
    h = Routing(*unreachable_stages(fail_workflow=False))
    r1, r2, r3 = h.start().dispatch
    h.done(r2, TaskResult.terminal("no"))
    t = h.done(r3, TaskResult.terminal("no"))
    assert ({"r3": S.STOPPED, "q": S.SKIPPED}, [], [], False) == (
        h.written(t),
        t.cancel_runs,
        t.dispatch,
        t.finished,
    )
    q = h.run("q")
    assert (True, None) == (q.pruned, q.error)
    skipped = only([e for e in t.events if e.kind == "stage.skipped"])
    assert skipped.message is not None
    assert "needs 2 of 3 requisites, and only 1 can still arrive" in skipped.message
    assert S.RUNNING == h.run_status()  # r1 still runs
    end = h.done(r1, ok())
    assert (True, S.SUCCEEDED) == (end.finished, h.run_status())  # STOPPED branches: the run succeeds


# cancel_remaining ------------------------------------------------------------------------


def test_cancel_remaining_cancels_the_running_requisite_and_prunes_what_only_it_fed() -> None:
    """d2 starts on b: c (not started) is pruned, after_c (only after c) follows, and c1 (running, feeding only c)
    is pruned with its call cancelled and its row consumed."""
    h = Routing(
        Stage("a", "t"),
        Stage("c1", "t", requisites=["a"]),
        Stage("c", "t", requisites=["c1"]),
        Stage("b", "t", requisites=["a"]),
        Stage("d2", "t", requisites=["b", "c"], join_type=JoinType.DISCRIMINATOR, cancel_remaining=True),
        Stage("after_c", "t", requisites=["c"]),
    )
    runs = h.by_ref(h.done(only(h.start().dispatch), ok()))
    rc1, rb = runs["c1"], runs["b"]
    t = h.done(rb, ok())
    assert {
        "b": S.SUCCEEDED,
        "d2": S.RUNNING,
        "c": S.SKIPPED,
        "after_c": S.SKIPPED,
        "c1": S.SKIPPED,
    } == h.written(t)
    assert ([rc1.id], [rb.id, rc1.id]) == (t.cancel_runs, t.consumed)
    assert ["d2"] == h.refs(t.dispatch)
    assert all(h.run(r).pruned for r in ("c1", "c", "after_c"))
    assert not any(h.run(r).pruned for r in ("a", "b", "d2"))
    why = "canceled by join 'd2' (cancel_remaining)"
    assert [
        ("stage.skipped", "c", why),
        ("stage.skipped", "after_c", "every stage before it was pruned"),
        ("stage.skipped", "c1", why),
    ] == [(e.kind, e.stage, e.message) for e in t.events if e.kind == "stage.skipped"]
    assert S.RUNNING == h.run_status()  # pruning never halts the run
    assert h.done(rc1, ok()).empty  # the cancelled call's late result is stale
    end = h.done(h.by_ref(t)["d2"], ok())
    assert (True, S.SUCCEEDED) == (end.finished, h.run_status())


def test_cancel_remaining_keeps_an_upstream_stage_that_still_feeds_a_live_stage() -> None:
    """r2 runs and feeds both x (pruned by the join) and y (not pruned): r2 is left running."""
    h = Routing(
        Stage("r1", "t"),
        Stage("r2", "t"),
        Stage("x", "t", requisites=["r2"]),
        Stage("y", "t", requisites=["r2"]),
        Stage("j", "t", requisites=["r1", "x"], join_type=JoinType.DISCRIMINATOR, cancel_remaining=True),
    )
    r1, r2 = h.start().dispatch
    t = h.done(r1, ok())
    assert ({"r1": S.SUCCEEDED, "j": S.RUNNING, "x": S.SKIPPED}, []) == (h.written(t), t.cancel_runs)
    assert S.RUNNING == h.run("r2").status
    ry = h.by_ref(h.done(r2, ok()))["y"]
    h.done(ry, ok())
    h.done(h.by_ref(t)["j"], ok())
    assert S.SUCCEEDED == h.run_status()


# MULTI_MERGE -------------------------------------------------------------------------------


def merge_stages() -> list[Stage]:
    return [
        Stage("a", "t"),
        Stage("b", "t"),
        Stage("m", "t", requisites=["a", "b"], join_type=JoinType.MULTI_MERGE),
        Stage("after", "t", requisites=["m"]),
    ]


def test_multi_merge_a_second_arrival_while_it_runs_starts_its_second_run_after_the_first() -> None:
    h = Routing(*merge_stages())
    ra, rb = h.start().dispatch
    rm0 = h.by_ref(h.done(ra, ok(x="a")))["m"]
    m = h.run("m")
    assert (0, 1, (0,)) == (rm0.generation, m.fired, m.arrivals)
    assert {"x": "a", "_merge_from": "a", "_merge_index": 1} == m.context_update
    t = h.done(rb, ok(x="b"))  # m is running: its second run waits for the first to end
    assert ({"b": S.SUCCEEDED, "m": S.RUNNING}, [], [], [("stage.completed", "b")]) == (
        h.written(t),
        t.dispatch,
        t.emitted,
        events(t),
    )
    assert ((0, 1), 1, 0) == (h.run("m").arrivals, h.run("m").fired, h.run("m").generation)  # the arrival, noted
    t = h.done(rm0, ok(run=1))
    rm1 = only(t.dispatch)
    assert ("m", 1) == (h.refs(t.dispatch)[0], rm1.generation)
    assert rm1.id != rm0.id
    assert {"m": S.RUNNING} == h.written(t)  # after is not touched: m is not done
    assert [("stage.completed", "m"), ("stage.started", "m")] == events(t)
    assert ["stage.completed:2:0", "stage.started:2:1"] == [e.key for e in t.events]
    m = h.run("m")
    assert (2, {}, {"x": "b", "_merge_from": "b", "_merge_index": 2}) == (m.fired, m.outputs, m.context_update)
    t = h.done(rm1, ok(run=2))
    assert ({"m": S.SUCCEEDED, "after": S.RUNNING}, ["after"]) == (h.written(t), h.refs(t.dispatch))
    assert {"run": 2} == h.run("m").outputs
    h.done(only(t.dispatch), ok())
    assert S.SUCCEEDED == h.run_status()
    started = [e.stage for s in h.log for e in s.events if e.kind == "stage.started"]
    assert (2, 1) == (started.count("m"), started.count("after"))


def test_multi_merge_an_arrival_after_its_run_ended_starts_the_next_run() -> None:
    h = Routing(*merge_stages())
    ra, rb = h.start().dispatch
    rm0 = h.by_ref(h.done(ra, ok()))["m"]
    t = h.done(rm0, ok())  # b has not ended: m ends its run and waits for b, its downstream held
    assert ({"m": S.SUCCEEDED}, []) == (h.written(t), t.dispatch)
    assert (0, 1, True) == (h.run("m").generation, h.run("m").fired, h.run("m").merging)
    t = h.done(rb, ok())
    assert ({"b": S.SUCCEEDED, "m": S.RUNNING}, [("m", 1)]) == (
        h.written(t),
        [(h.refs([r])[0], r.generation) for r in t.dispatch],
    )
    t = h.done(only(t.dispatch), ok())
    assert ["after"] == h.refs(t.dispatch)


def test_multi_merge_closes_as_its_last_run_when_no_requisite_can_fire_again() -> None:
    """After m's one run, b stops (fail_workflow=False): m ends as that run did, outputs kept, after runs once."""
    h = Routing(
        Stage("a", "t"),
        Stage("b", "t", fail_workflow=False),
        Stage("m", "t", requisites=["a", "b"], join_type=JoinType.MULTI_MERGE),
        Stage("after", "t", requisites=["m"]),
    )
    ra, rb = h.start().dispatch
    h.done(h.by_ref(h.done(ra, ok()))["m"], ok(from_run=1))
    t = h.done(rb, TaskResult.terminal("stop"))
    assert {"b": S.STOPPED, "m": S.SUCCEEDED, "after": S.RUNNING} == h.written(t)
    assert ({"from_run": 1}, 1) == (h.run("m").outputs, h.run("m").fired)
    assert ["after"] == h.refs(t.dispatch)


# OR splits -----------------------------------------------------------------------------------


def split_stages(join: JoinType) -> list[Stage]:
    return [
        Stage("route", "t", split_type=SplitType.OR, split_conditions={"fast": "score > 0.8", "slow": "score <= 0.8"}),
        Stage("fast", "t", requisites=["route"]),
        Stage("slow", "t", requisites=["route"]),
        Stage("slow2", "t", requisites=["slow"]),
        Stage("audit", "t", requisites=["route"]),  # no condition: always taken
        Stage("join", "t", requisites=["fast", "slow2"], join_type=join),
    ]


@pytest.mark.parametrize("join", [JoinType.OR, JoinType.AND])
def test_an_or_split_drops_the_branch_not_taken_and_pruning_reaches_the_grandchild(join: JoinType) -> None:
    h = Routing(*split_stages(join))
    t = h.done(only(h.start().dispatch), ok(score=0.9))
    assert {
        "route": S.SUCCEEDED,
        "fast": S.RUNNING,
        "slow": S.SKIPPED,
        "slow2": S.SKIPPED,
        "audit": S.RUNNING,
    } == h.written(t)
    assert (h.i("slow"),) == h.run("route").dropped
    assert (True, True) == (h.run("slow").pruned, h.run("slow2").pruned)
    assert ["fast", "audit"] == h.refs(t.dispatch)
    assert [
        ("stage.completed", "route"),
        ("stage.started", "fast"),
        ("stage.skipped", "slow"),
        ("stage.skipped", "slow2"),
        ("stage.started", "audit"),
    ] == events(t)
    j = h.i("join")
    assert (1, 1) == (h.state.outstanding[j], h.state.dead[j])  # waits for fast only
    runs = h.by_ref(t)
    h.done(runs["audit"], ok())
    t = h.done(runs["fast"], ok())
    assert ["join"] == h.refs(t.dispatch)
    h.done(only(t.dispatch), ok())
    assert S.SUCCEEDED == h.run_status()


def test_an_or_split_taking_nothing_prunes_its_whole_downstream_and_ends_the_run() -> None:
    h = Routing(
        Stage("route", "t", split_type=SplitType.OR, split_conditions={"x": "score > 1", "y": "score < 0"}),
        Stage("x", "t", requisites=["route"]),
        Stage("y", "t", requisites=["route"]),
        Stage("z", "t", requisites=["x", "y"]),
    )
    t = h.done(only(h.start().dispatch), ok(score=0.5))
    assert {"route": S.SUCCEEDED, "x": S.SKIPPED, "y": S.SKIPPED, "z": S.SKIPPED} == h.written(t)
    assert ((h.i("x"), h.i("y")), True, S.SUCCEEDED) == (h.run("route").dropped, t.finished, h.run_status())
    assert all(h.run(r).pruned for r in "xyz")


def test_a_split_condition_that_raises_fails_the_split_stage() -> None:
    h = Routing(
        Stage("route", "t", split_type=SplitType.OR, split_conditions={"x": "missing > 1"}),
        Stage("x", "t", requisites=["route"]),
    )
    t = h.done(only(h.start().dispatch), ok(score=0.5))
    assert ({"route": S.TERMINAL}, [], True) == (h.written(t), t.dispatch, t.finished)
    route = h.run("route")
    assert route.error is not None
    assert ("ConditionError", (), {"score": 0.5}) == (route.error.type, route.dropped, route.outputs)
    assert "missing" in route.error.message
    assert (S.NOT_STARTED, S.TERMINAL) == (h.status("x"), h.run_status())
    assert [("stage.completed", "route"), ("workflow.completed", None)] == events(t)


# jumps --------------------------------------------------------------------------------------


def back_stages() -> list[Stage]:
    return [
        Stage("a", "t"),
        Stage("b", "t", requisites=["a"]),
        Stage("side", "t", requisites=["a"]),
        Stage("c", "t", requisites=["b"]),
        Stage("after", "t", requisites=["c"]),
    ]


@pytest.mark.parametrize("side_done", [True, False])
def test_a_jump_back_resets_the_scope_as_new_generations_and_leaves_the_side_stage(side_done: bool) -> None:
    h = Routing(*back_stages())
    runs = h.by_ref(h.done(only(h.start().dispatch), ok(a=0)))
    if side_done:
        h.done(runs["side"], ok(side=1))
    rc = only(h.done(runs["b"], ok(b=0)).dispatch)
    side_before = h.run("side")
    t = h.done(rc, TaskResult.jump_to("a", context={"feedback": "again"}, outputs={"seen": 1}))
    assert {"a": S.RUNNING, "b": S.NOT_STARTED, "c": S.NOT_STARTED} == h.written(t)
    assert {"a": 1, "b": 1, "side": 0, "c": 1, "after": 0} == h.generations()
    assert side_before == h.run("side")  # beside the path: untouched (still running if it was)
    assert ([rc.id], []) == (t.consumed, t.cancel_runs)
    ra1 = only(t.dispatch)
    assert ("a", 1) == (h.refs([ra1])[0], ra1.generation)
    a = h.run("a")
    assert ({"seen": 1, "feedback": "again"}, {}) == (a.context_update, a.outputs)
    assert ({}, {}) == (h.run("b").outputs, h.run("c").outputs)
    assert 1 == h.state.record.jumps
    assert t.workflow is not None
    assert 1 == t.workflow.jumps
    assert [("stage.jumped", "c"), ("stage.started", "a")] == events(t)
    assert ["c -> a (context: [feedback])"] == jumped(h)
    assert "again" == h.state.stage_context(h.i("a"))["feedback"]
    # the rerun: a, b, c once more as generation 1; side is not rerun, after runs once
    t = h.done(ra1, ok(a=1))
    assert ["b"] == h.refs(t.dispatch)
    rc1 = only(h.done(only(t.dispatch), ok(b=1)).dispatch)
    assert 1 == rc1.generation
    rafter = only(h.done(rc1, ok(c=1)).dispatch)
    if not side_done:
        h.done(runs["side"], ok(side=1))
    h.done(rafter, ok())
    assert S.SUCCEEDED == h.run_status()
    started = [e.key for s in h.log for e in s.events if e.kind == "stage.started"]
    assert ["stage.started:2:0"] == [k for k in started if k.startswith("stage.started:2:")]


def test_a_jump_back_cancels_a_running_stage_inside_its_scope() -> None:
    """c (a discriminator after b1 and b2) jumps back to a while b2 runs: b2 is in the scope, its call cancelled."""
    h = Routing(
        Stage("a", "t"),
        Stage("b1", "t", requisites=["a"]),
        Stage("b2", "t", requisites=["a"]),
        Stage("c", "t", requisites=["b1", "b2"], join_type=JoinType.DISCRIMINATOR),
    )
    runs = h.by_ref(h.done(only(h.start().dispatch), ok()))
    rc = only(h.done(runs["b1"], ok()).dispatch)
    t = h.done(rc, TaskResult.jump_to("a"))
    rb2 = runs["b2"]
    assert {"a": S.RUNNING, "b1": S.NOT_STARTED, "b2": S.NOT_STARTED, "c": S.NOT_STARTED} == h.written(t)
    assert ([rb2.id], {rc.id, rb2.id}) == (t.cancel_runs, set(t.consumed))
    assert [1, 1, 1, 1] == [r.generation for r in h.state.runs]
    assert h.done(rb2, ok()).empty  # the cancelled call's late result


def test_a_jump_forward_succeeds_the_source_starts_the_target_and_prunes_only_its_branch() -> None:
    h = Routing(
        Stage("r", "t"),
        Stage("a", "t"),
        Stage("x", "t", requisites=["a"]),
        Stage("x2", "t", requisites=["x"]),
        Stage("y", "t", requisites=["a", "r"]),
        Stage("t", "t", requisites=["x2"]),
    )
    rr, ra = h.start().dispatch
    t = h.done(ra, TaskResult.jump_to("t", context={"via": "a"}, outputs={"hopped": True}))
    assert {"a": S.SUCCEEDED, "t": S.RUNNING, "x": S.SKIPPED, "x2": S.SKIPPED} == h.written(t)
    a = h.run("a")
    assert ({"hopped": True}, (h.i("x"), h.i("y")), False) == (a.outputs, a.dropped, a.pruned)
    assert (True, True) == (h.run("x").pruned, h.run("x2").pruned)
    assert (["t"], [ra.id]) == (h.refs(t.dispatch), t.consumed)
    assert {"via": "a"} == h.run("t").context_update
    assert S.NOT_STARTED == h.status("y")  # its edge from a is dead, its edge from r still live
    assert [
        ("stage.jumped", "a"),
        ("stage.started", "t"),
        ("stage.completed", "a"),
        ("stage.skipped", "x"),
        ("stage.skipped", "x2"),
    ] == events(t)
    assert (1, ["a -> t (context: [via])"]) == (h.state.record.jumps, jumped(h))
    t2 = h.done(rr, ok())
    assert ["y"] == h.refs(t2.dispatch)
    h.done(only(t2.dispatch), ok())
    h.done(h.by_ref(t)["t"], ok())
    assert S.SUCCEEDED == h.run_status()


def test_over_max_jumps_the_source_fails_with_a_jump_error() -> None:
    h = Routing(Stage("p", "t"), max_jumps=2)
    run = only(h.start().dispatch)
    for n in (1, 2):
        t = h.done(run, TaskResult.jump_to("p"))
        run = only(t.dispatch)
        assert (n, n) == (h.state.record.jumps, run.generation)
    t = h.done(run, TaskResult.jump_to("p"))
    assert ({"p": S.TERMINAL}, [], True) == (h.written(t), t.dispatch, t.finished)
    error = h.run("p").error
    assert error is not None
    assert "JumpError" == error.type
    assert "stage 'p': jump to 'p' refused: the run has taken its max_jumps=2 jumps" == error.message
    assert (2, S.TERMINAL) == (h.state.record.jumps, h.run_status())
    assert [("stage.completed", "p"), ("workflow.completed", None)] == events(t)
    assert 2 == len(jumped(h))


def test_a_jump_to_an_unknown_stage_fails_the_source() -> None:
    h = Routing(Stage("p", "t"), Stage("q", "t", requisites=["p"]))
    t = h.done(only(h.start().dispatch), TaskResult.jump_to("nowhere"))
    assert ({"p": S.TERMINAL}, [], True) == (h.written(t), t.dispatch, t.finished)
    error = h.run("p").error
    assert error is not None
    assert ("JumpError", "stage 'p': jump target 'nowhere' is not a stage of this workflow") == (
        error.type,
        error.message,
    )
    assert (0, [], S.NOT_STARTED) == (h.state.record.jumps, jumped(h), h.status("q"))


def test_a_while_loop_keeps_the_counters_in_step_through_its_loop_jumps() -> None:
    """Loop jumps (not counted in jumps) reset the body each iteration; the counters agree after every turn."""
    h = Routing(
        Stage("start", "t"),
        *while_loop("w", "n < 2", body=[Stage("inc", "t")], requisites=["start"]),
        Stage("after", "t", requisites=["w"]),
        inputs={"n": 0},
    )
    run = only(h.done(only(h.start().dispatch), ok()).dispatch)
    for n in (1, 2):
        assert ("inc", n - 1) == (h.refs([run])[0], run.generation)
        run = only(h.done(run, ok(n=n)).dispatch)
    assert "after" == h.refs([run])[0]
    assert {"n": 2, "loop": {"iterations": 2, "exit": "condition"}} == h.run("w").outputs
    h.done(run, ok())
    assert (S.SUCCEEDED, 0) == (h.run_status(), h.state.record.jumps)


def drain(h: Routing, runs: list[RunTask]) -> list[str]:
    """Complete every call dispatched from ``runs`` on, breadth first, until none is left; the refs, in order."""
    done: list[str] = []
    queue = list(runs)
    while queue:
        run = queue.pop(0)
        done.append(h.refs([run])[0])
        queue += h.done(run, ok()).dispatch
    return done


def test_a_jump_back_over_a_multi_merge_join_with_a_requisite_outside_its_scope_goes_on() -> None:
    h = Routing(
        Stage("a", "t"),
        Stage("b", "t"),
        Stage("m", "t", requisites=["a", "b"], join_type=JoinType.MULTI_MERGE),
        Stage("c", "t", requisites=["m"]),
    )
    ra, rb = h.start().dispatch
    rm = h.by_ref(h.done(ra, ok()))["m"]
    h.done(rb, ok())
    rc = only(h.done(only(h.done(rm, ok()).dispatch), ok()).dispatch)  # m ran twice; c runs
    t = h.done(rc, TaskResult.jump_to("a"))  # the scope: a, m, c (b is beside it, SUCCEEDED)
    assert {"a": 1, "b": 0, "m": 2, "c": 1} == h.generations()
    rerun = drain(h, t.dispatch)
    assert ("a", 1) == (rerun[0], rerun.count("c"))
    assert "m" in rerun
    assert S.SUCCEEDED == h.run_status()


def test_a_forward_jump_to_a_multi_merge_join_starts_it() -> None:
    h = Routing(
        Stage("s", "t"),
        Stage("x", "t"),
        Stage("m", "t", requisites=["x"], join_type=JoinType.MULTI_MERGE),
    )
    rs, rx = h.start().dispatch
    t = h.done(rs, TaskResult.jump_to("m", context={"via": "s"}))
    assert ({"s": S.SUCCEEDED, "m": S.RUNNING}, ["m"]) == (h.written(t), h.refs(t.dispatch))
    assert "s" == h.state.stage_context(h.i("m"))["via"]
    drain(h, [*t.dispatch, rx])
    assert S.SUCCEEDED == h.run_status()
