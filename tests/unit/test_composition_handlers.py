"""Multi-instance and sub-workflow stages on the pure handlers, turn by turn (issue 11)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from test_handlers import Step, ok, only
from test_routing_handlers import Routing, counts

from stabilize_aio import MultiInstance, Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.messages.durable import CancelWorkflow, ChildDone, Send
from stabilize_aio.messages.memory import Sent
from stabilize_aio.state.turn import Turn
from stabilize_aio.state.workflow import WorkflowState

S = WorkflowStatus


class Composed(Routing):
    """The Routing harness, its counter check covering the stages a turn makes."""

    def _turn(self, fold: Callable[[Turn], None]) -> Step:
        turn = Turn(self.state, self.now)
        fold(turn)
        overlay = [turn.counts(i) for i in range(turn.size)], turn.active
        step = self._applied(turn.commit, turn.effects)
        st = self.state
        rebuilt = WorkflowState(st.record, list(st.specs), list(st.runs))
        assert counts(rebuilt) == counts(st)
        assert counts(rebuilt) == overlay
        return step


def test_a_multi_instance_stage_makes_its_instances_in_the_turn_it_starts_and_runs_max_parallel() -> None:
    h = Composed(Stage("fan", "t", instances=MultiInstance(over="xs", item_key="x", max_parallel=2)),
                 inputs={"xs": ["a", "b", "c"]})  # fmt: skip
    t = h.start()
    assert [s.ref_id for s in t.commit.added or []] == ["fan[0]", "fan[1]", "fan[2]"]
    assert h.refs(t.dispatch) == ["fan[0]", "fan[1]"]  # two at a time
    assert h.state.stage_context(h.i("fan[1]"))["x"] == "b"
    assert h.state.stage_context(h.i("fan[1]"))["instance_index"] == 1
    fanned = h.run("fan").fanned
    assert fanned is not None
    assert (fanned.first, fanned.n, fanned.started) == (1, 3, 2)
    r0, r1 = t.dispatch
    t = h.done(r0, ok(v=0))
    assert h.refs(t.dispatch) == ["fan[2]"]  # the next one, as a slot frees
    assert set(h.written(t)) == {"fan", "fan[0]", "fan[2]"}  # O(1) rows: the instance, the next, the stage
    h.done(r1, ok(v=1))
    t = h.done(only(t.dispatch), ok(v=2))
    assert h.written(t)["fan"] is S.SUCCEEDED
    assert h.run("fan").outputs == {"instances": [{"v": 0}, {"v": 1}, {"v": 2}]}
    assert h.run_status() is S.SUCCEEDED


def test_complete_after_with_cancel_remaining_cancels_the_running_instances_in_the_same_turn() -> None:
    h = Composed(Stage("fan", "t", instances=MultiInstance(count=4, complete_after=2, cancel_remaining=True)))
    runs = h.start().dispatch
    h.done(runs[0], ok())
    t = h.done(runs[1], ok())
    assert sorted(t.cancel_runs) == sorted(r.id for r in runs[2:])
    assert set(t.consumed) >= {r.id for r in runs[2:]}
    assert [h.run(f"fan[{k}]").status for k in range(4)] == [S.SUCCEEDED, S.SUCCEEDED, S.SKIPPED, S.SKIPPED]
    assert h.run("fan[3]").pruned
    assert h.run_status() is S.SUCCEEDED
    late = h.done(runs[2], ok())  # a cancelled call's late result changes nothing
    assert late.stages == {}


def test_a_sub_workflow_stage_owes_its_child_a_start_and_ends_with_its_news() -> None:
    child = Workflow(application="a", name="child", stages=[Stage("x", "t")])
    h = Composed(Stage("sub", workflow=child, context={"c": 1}), Stage("after", "t", requisites=["sub"]))
    t = h.start()
    send = only(t.effects.sends or [])
    assert (send.kind, send.target, send.stage, send.inputs["c"]) == ("start", "wf-1/sub.0", 0, 1)
    assert send in t.emitted  # the owed start is a row of the turn that decided it
    assert h.run("sub").child == "wf-1/sub.0"
    t = h.send(Sent(id=send.id))  # done: the row goes
    assert t.discarded == [send.id]
    done = ChildDone(id="child-done:wf-1/sub.0", child="wf-1/sub.0", stage=0, generation=0, status="SUCCEEDED",
                     outputs={"score": 3})  # fmt: skip
    t = h.send(done)
    assert t.consumed == [done.id]
    assert (h.written(t)["sub"], h.run("sub").outputs) == (S.SUCCEEDED, {"score": 3})
    assert h.refs(t.dispatch) == ["after"]


def test_a_stale_child_done_is_dropped_and_a_failed_child_fails_the_stage() -> None:
    child = Workflow(application="a", name="child", stages=[Stage("x", "t")])
    h = Composed(Stage("sub", workflow=child))
    h.start()
    stale = ChildDone(id="old", child="wf-1/sub.7", stage=0, generation=7, status="SUCCEEDED")
    t = h.send(stale)
    assert (t.discarded, t.stages) == (["old"], {})
    failed = ChildDone(id="d", child="wf-1/sub.0", stage=0, generation=0, status="TERMINAL")
    h.send(failed)
    err = h.run("sub").error
    assert err is not None
    assert err.type == "ChildFailed"
    assert h.run_status() is S.TERMINAL


def test_a_cancelled_parent_owes_its_running_child_a_cancel() -> None:
    child = Workflow(application="a", name="child", stages=[Stage("x", "t")])
    h = Composed(Stage("sub", workflow=child), Stage("side", "t"))
    h.start()
    t = h.send(CancelWorkflow(id="cancel", reason="stop"))
    cancels = [s for s in t.effects.sends or [] if s.kind == "cancel"]
    assert [(s.target, s.id) for s in cancels] == [("wf-1/sub.0", "x0.0")]
    assert h.run_status() is S.CANCELED


def test_a_child_run_tells_its_parent_when_it_ends() -> None:
    h = Composed(Stage("x", "t"))
    rec = h.state.record
    h.state.record = msgspec.structs.replace(rec, parent="p-1", parent_stage=2, parent_generation=1)
    run = only(h.start().dispatch)
    t = h.done(run, TaskResult.success(outputs={"n": 5}))
    tell = only(t.effects.sends or [])
    assert isinstance(tell, Send)
    assert (tell.kind, tell.target, tell.stage, tell.generation, tell.status, tell.outputs) == (
        "done", "p-1", 2, 1, "SUCCEEDED", {"n": 5}
    )  # fmt: skip
    assert t.finished
