"""Unit tests of synthetic stages and compensation on the pure handlers, turn by turn (issue 11).

No engine, no I/O: each turn is folded on a :class:`Turn` over a
:class:`WorkflowState` by the routing tests' harness (``Routing``), which also
checks after every turn that the join counters of the turn, of the state after
``apply(commit)`` and of a state rebuilt from the committed records agree.

Covered: before stages in order, then the stage's tasks, then its after stages
(the stage RUNNING throughout, SUCCEEDED after the last); a failing before or
after stage failing its stage (``SyntheticStageFailed``); on_failure stages,
with the run halting and the other live stage's call cancelled for a TERMINAL
failure only; compensation in reverse order of completion (results folded in
one turn: in reverse order of folding), calls in flight first and only with
``compensate_unknown``; a cancel while halting (recorded, its row consumed,
nothing else changed); the run's final status and ``compensation``; nothing
but on_failure and compensation stages starting while the run halts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec
import pytest
from test_handlers import NO_WAIT, Step, ok, only
from test_routing_handlers import Routing, events

from stabilize_aio import Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.dag.compile import compile_workflow
from stabilize_aio.handlers import apply, kernel
from stabilize_aio.messages.durable import CancelWorkflow, RunTask, StageTimeout
from stabilize_aio.messages.memory import FailWorkflow, TaskDone, TaskOutcome
from stabilize_aio.model.records import StageRun, WorkflowRecord
from stabilize_aio.model.values import ErrorInfo
from stabilize_aio.state.turn import Turn
from stabilize_aio.state.workflow import WorkflowState

S = WorkflowStatus


class Saga(Routing):
    """Routing's harness; the task types in ``unknown`` are registered with ``compensate_unknown``."""

    def __init__(self, *stages: Stage, unknown: Collection[str] = ()) -> None:
        super().__init__(*stages)
        template, specs = compile_workflow(Workflow(application="app", name="wf", stages=list(stages)), {}, unknown)
        record = msgspec.structs.replace(template, id="wf-1", created_at=0.0)
        self.state = WorkflowState(record, specs, [StageRun() for _ in specs])

    def tick(self) -> None:
        """The clock moves on (a later turn ends its stages later)."""
        self.now += 1.0

    def record(self) -> WorkflowRecord:
        """The run's record (a call: the type checker keeps no narrowing of it between turns)."""
        return self.state.record

    def cancel(self, reason: str) -> Step:
        return self.send(CancelWorkflow(id="cancel", reason=reason))

    def batch(self, *results: tuple[RunTask, TaskResult]) -> Step:
        """One turn folding several results (an actor's batch of messages)."""
        messages = [TaskDone(run=run, outcome=TaskOutcome(result=result, retry=NO_WAIT)) for run, result in results]

        def fold(turn: Turn) -> None:
            for message in messages:
                apply(turn, message)

        return self._turn(fold)

    def one(self, step: Step, ref: str) -> RunTask:
        """The one call a turn dispatches, which must be ``ref``'s."""
        run = only(step.dispatch)
        assert [ref] == self.refs([run])
        return run

    def compensating(self) -> tuple[str, str | None, tuple[str, ...], WorkflowStatus | None, bool]:
        """(status, compensation, queue as ref ids, ending, halting) of the run's record."""
        r = self.record()
        return r.status.value, r.compensation, tuple(self.state.specs[i].ref_id for i in r.queue), r.ending, r.halting


def error_of(run: StageRun) -> ErrorInfo:
    assert run.error is not None
    return run.error


# before and after stages -------------------------------------------------------------


def test_before_stages_run_in_order_then_the_tasks_then_the_after_stages_with_the_stage_running() -> None:
    h = Saga(
        Stage("build", "t"),
        Stage(
            "deploy",
            "push",
            requisites=["build"],
            before=[Stage("snapshot", "t"), Stage("lock", "t")],
            after=[Stage("verify", "t")],
            on_failure=[Stage("page", "t")],
        ),
        Stage("done", "t", requisites=["deploy"]),
    )
    t = h.done(h.one(h.start(), "build"), ok(built=1))
    assert {"build": S.SUCCEEDED, "deploy": S.RUNNING, "deploy/snapshot": S.RUNNING} == h.written(t)
    first = [("stage.completed", "build"), ("stage.started", "deploy"), ("stage.started", "deploy/snapshot")]
    assert first == events(t)
    assert 1 == h.state.stage_context(h.i("deploy/snapshot"))["built"]  # it sees its stage's context

    t = h.done(h.one(t, "deploy/snapshot"), ok(snap=1))
    assert {"deploy/snapshot": S.SUCCEEDED, "deploy": S.RUNNING, "deploy/lock": S.RUNNING} == h.written(t)
    assert [("stage.completed", "deploy/snapshot"), ("stage.started", "deploy/lock")] == events(t)

    t = h.done(h.one(t, "deploy/lock"), ok(lock=2))
    run = h.one(t, "deploy")  # the stage's own task, once its before stages have run
    assert ("push", {"deploy/lock": S.SUCCEEDED, "deploy": S.RUNNING}) == (run.task_type, h.written(t))
    assert [("stage.completed", "deploy/lock")] == events(t)
    context = h.state.stage_context(h.i("deploy"))
    assert (1, 1, 2) == (context["built"], context["snap"], context["lock"])  # before stages' outputs reach it

    t = h.done(run, ok(pushed=1))
    assert {"deploy": S.RUNNING, "deploy/verify": S.RUNNING} == h.written(t)
    assert [("stage.started", "deploy/verify")] == events(t)

    t = h.done(h.one(t, "deploy/verify"), ok(verified=1))
    assert {"deploy/verify": S.SUCCEEDED, "deploy": S.SUCCEEDED, "done": S.RUNNING} == h.written(t)
    assert [
        ("stage.completed", "deploy/verify"),
        ("stage.completed", "deploy"),
        ("stage.started", "done"),
    ] == events(t)
    assert {"pushed": 1, "verified": 1} == h.run("deploy").outputs  # an after stage's outputs are the stage's
    assert 1 == h.state.stage_context(h.i("done"))["verified"]

    t = h.done(h.one(t, "done"), ok())
    assert (True, S.SUCCEEDED, S.NOT_STARTED) == (t.finished, h.run_status(), h.status("deploy/page"))
    started = [e.stage for step in h.log for e in step.events if e.kind == "stage.started"]
    assert 1 == started.count("deploy")  # RUNNING from its first before stage's start to its after stage's end


@pytest.mark.parametrize("role", ["before", "after"])
@pytest.mark.parametrize(("continue_on_failure", "final"), [(False, S.TERMINAL), (True, S.FAILED_CONTINUE)])
def test_a_failing_before_or_after_stage_fails_its_stage_and_nothing_after_it_in_the_plan_runs(
    role: str, continue_on_failure: bool, final: WorkflowStatus
) -> None:
    plan = [Stage("check", "t"), Stage("never", "t")]
    h = Saga(
        Stage(
            "deploy",
            "push",
            continue_on_failure=continue_on_failure,
            before=plan if role == "before" else None,
            after=plan if role == "after" else None,
        ),
        Stage("next", "t", requisites=["deploy"]),
    )
    run = h.one(h.start(), "deploy/check" if role == "before" else "deploy")
    if role == "after":  # its task first
        run = h.one(h.done(run, ok()), "deploy/check")
    t = h.done(run, TaskResult.terminal("it broke"))
    goes_on = {"next": S.RUNNING} if continue_on_failure else {}
    assert {"deploy/check": S.TERMINAL, "deploy": final} | goes_on == h.written(t)
    error = error_of(h.run("deploy"))
    assert "SyntheticStageFailed" == error.type
    assert f"stage 'deploy': its {role} stage 'deploy/check' ended TERMINAL: it broke" == error.message
    assert S.NOT_STARTED == h.status("deploy/never")
    calls = [h.refs([r])[0] for step in h.log for r in step.dispatch]
    assert calls == (["deploy/check"] if role == "before" else ["deploy", "deploy/check"]) + (
        ["next"] if continue_on_failure else []
    )
    if continue_on_failure:
        assert (S.RUNNING, ["next"]) == (h.run_status(), h.refs(t.dispatch))
    else:
        assert (S.TERMINAL, True, S.NOT_STARTED) == (h.run_status(), t.finished, h.status("next"))


# on_failure stages --------------------------------------------------------------------


def on_failure_run(**options: Any) -> Saga:
    return Saga(
        Stage("side", "t"),
        Stage("deploy", "push", on_failure=[Stage("page", "t"), Stage("log", "t")], **options),
        Stage("after", "t", requisites=["deploy"]),
    )


def test_a_terminal_failure_runs_the_on_failure_stages_halting_the_run_and_cancels_the_other_live_stage() -> None:
    h = on_failure_run()
    rside, rdeploy = h.start().dispatch
    t = h.done(rdeploy, TaskResult.terminal("it broke"))
    assert {"deploy": S.RUNNING, "side": S.CANCELED, "deploy/page": S.RUNNING} == h.written(t)
    assert ([rside.id], {rdeploy.id, rside.id}) == (t.cancel_runs, set(t.consumed))
    assert [("task.failed", "deploy"), ("stage.completed", "side"), ("stage.started", "deploy/page")] == events(t)
    assert (S.RUNNING, True, False) == (h.run_status(), h.record().halting, t.finished)
    deploy = h.run("deploy")
    assert (S.TERMINAL, "TaskTerminal", "it broke") == (deploy.held, error_of(deploy).type, error_of(deploy).message)
    assert h.done(rside, ok()).empty  # the cancelled call's late result

    t = h.done(h.one(t, "deploy/page"), TaskResult.terminal("pager down"))  # the next runs whatever its end
    assert {"deploy/page": S.TERMINAL, "deploy/log": S.RUNNING} == h.written(t)
    assert (S.RUNNING, True) == (h.run_status(), h.record().halting)

    t = h.done(h.one(t, "deploy/log"), ok(logged=1))
    assert {"deploy/log": S.SUCCEEDED, "deploy": S.TERMINAL} == h.written(t)
    assert [("stage.completed", "deploy/log"), ("stage.completed", "deploy"), ("workflow.completed", None)] == events(t)
    assert (True, S.TERMINAL, None) == (t.finished, h.run_status(), h.record().compensation)
    deploy = h.run("deploy")
    assert ("it broke", {"logged": 1}) == (error_of(deploy).message, deploy.outputs)  # its error kept
    assert S.NOT_STARTED == h.status("after")


@pytest.mark.parametrize(
    ("options", "final"), [({"continue_on_failure": True}, S.FAILED_CONTINUE), ({"fail_workflow": False}, S.STOPPED)]
)
def test_a_failure_that_does_not_halt_runs_the_on_failure_stages_while_the_run_goes_on(
    options: dict[str, Any], final: WorkflowStatus
) -> None:
    h = on_failure_run(**options)
    rside, rdeploy = h.start().dispatch
    t = h.done(rdeploy, TaskResult.terminal("it broke"))
    assert {"deploy": S.RUNNING, "deploy/page": S.RUNNING} == h.written(t)
    assert ([], [rdeploy.id], None) == (t.cancel_runs, t.consumed, t.workflow)  # side runs on; no halt
    assert (final, False) == (h.run("deploy").held, h.record().halting)
    rpage = h.one(t, "deploy/page")
    t = h.done(rside, ok())
    assert ({"side": S.SUCCEEDED}, S.RUNNING) == (h.written(t), h.run_status())
    t = h.done(h.one(h.done(rpage, ok()), "deploy/log"), ok())
    assert final == h.status("deploy")
    if final is S.FAILED_CONTINUE:  # its downstream goes on
        assert ["after"] == h.refs(t.dispatch)
        t = h.done(only(t.dispatch), ok())
    assert (True, S.SUCCEEDED) == (t.finished, h.run_status())


def test_a_deadline_while_a_before_stage_runs_cancels_it_and_runs_the_on_failure_stages() -> None:
    h = Saga(Stage("deploy", "push", stage_timeout=5.0, before=[Stage("snap", "t")], on_failure=[Stage("page", "t")]))
    t = h.start()
    rsnap = h.one(t, "deploy/snap")
    timer = only([m for m in t.emitted if isinstance(m, StageTimeout) and m.stage == h.i("deploy")])
    t = h.send(timer)
    assert {"deploy/snap": S.CANCELED, "deploy": S.RUNNING, "deploy/page": S.RUNNING} == h.written(t)
    assert ([rsnap.id], {timer.id, rsnap.id}) == (t.cancel_runs, set(t.consumed))
    assert (S.RUNNING, True, "StageTimeout") == (h.run_status(), h.record().halting, error_of(h.run("deploy")).type)
    assert (None, None) == (h.run("deploy").timer_id, h.run("deploy").run_id)
    t = h.done(h.one(t, "deploy/page"), ok())
    assert (S.TERMINAL, S.TERMINAL, True) == (h.status("deploy"), h.run_status(), t.finished)
    assert "StageTimeout" == error_of(h.run("deploy")).type


def test_a_cancel_while_on_failure_stages_run_is_recorded_and_they_go_on() -> None:
    h = on_failure_run()
    _, rdeploy = h.start().dispatch
    rpage = h.one(h.done(rdeploy, TaskResult.terminal("it broke")), "deploy/page")
    t = h.cancel("stop")
    assert (["cancel"], {}, [], [], [], [], False) == (
        t.consumed,
        t.stages,
        t.emitted,
        t.events,
        t.dispatch,
        t.cancel_runs,
        t.finished,
    )
    assert (S.RUNNING, True, "stop") == (h.run_status(), h.record().halting, h.record().cancel_reason)
    h.done(h.one(h.done(rpage, ok()), "deploy/log"), ok())
    assert (S.TERMINAL, "stop") == (h.run_status(), h.record().cancel_reason)  # it was failing: it ends TERMINAL


def test_nothing_but_on_failure_and_compensation_stages_starts_while_the_run_halts() -> None:
    h = Saga(
        Stage("a", "t", compensate="undo"),
        Stage("deploy", "push", requisites=["a"], on_failure=[Stage("page", "t"), Stage("log", "t")]),
        Stage("other", "t", before=[Stage("prep", "t")], after=[Stage("post", "t")]),
        Stage("after", "t", requisites=["deploy"]),
    )
    ra, rprep = h.start().dispatch
    assert ["other/prep"] == h.refs([rprep])
    rdeploy = h.one(h.done(ra, ok()), "deploy")
    t = h.done(rdeploy, TaskResult.terminal("it broke"))
    assert (True, S.CANCELED, S.CANCELED) == (h.record().halting, h.status("other"), h.status("other/prep"))
    assert [rprep.id] == t.cancel_runs

    def starts(ref: str) -> dict[str, WorkflowStatus]:
        """What starting stage ``ref`` now would write (a turn folded and thrown away)."""
        turn = Turn(h.state, h.now)
        kernel.start_stage(turn, h.i(ref))
        return {h.state.specs[i].ref_id: run.status for i, run in turn.commit.stages.items()}

    for ref in ("after", "other/post"):
        assert {} == starts(ref), ref
    assert {"deploy/log": S.RUNNING} == starts("deploy/log")  # an on_failure stage may start
    t = h.done(h.one(h.done(h.one(t, "deploy/page"), ok()), "deploy/log"), ok())
    assert ("RUNNING", "running", (), S.TERMINAL, True) == h.compensating()  # halting still, now compensating
    for ref in ("after", "other/post"):
        assert {} == starts(ref), ref
    h.done(h.one(t, "a/compensate"), ok())
    assert ("TERMINAL", "done", (), S.TERMINAL, False) == h.compensating()


# compensation -----------------------------------------------------------------------


def saga_chain() -> Saga:
    return Saga(
        Stage("a", "t", compensate="undo"),
        Stage("b", "t", requisites=["a"]),  # nothing to undo
        Stage("c", "t", requisites=["b"], compensate="undo"),
        Stage("d", "t", requisites=["c"], compensate="undo"),
        Stage("e", "pay", requisites=["d"], compensate="undo"),  # fails: nothing to undo
    )


def test_a_failed_run_compensates_one_at_a_time_in_reverse_order_of_completion_then_ends_terminal() -> None:
    h = saga_chain()
    run = only(h.start().dispatch)
    for ref in "abcd":
        h.tick()
        run = only(h.done(run, ok(**{f"{ref}_id": f"{ref}-1"})).dispatch)
    h.tick()
    t = h.done(run, TaskResult.terminal("declined"))
    assert {"e": S.TERMINAL, "d/compensate": S.RUNNING} == h.written(t)
    assert [
        ("task.failed", "e"),
        ("stage.completed", "e"),
        ("compensation.started", None),
        ("stage.started", "d/compensate"),
    ] == events(t)
    assert "3 to compensate" == only([e for e in t.events if e.kind == "compensation.started"]).message
    assert ("RUNNING", "running", ("c/compensate", "a/compensate"), S.TERMINAL, True) == h.compensating()
    assert (False, "undo") == (t.finished, h.one(t, "d/compensate").task_type)
    assert "d-1" == h.state.stage_context(h.i("d/compensate"))["d_id"]  # it sees what its stage made

    t = h.done(h.one(t, "d/compensate"), ok())
    assert {"d/compensate": S.SUCCEEDED, "c/compensate": S.RUNNING} == h.written(t)
    assert [("stage.completed", "d/compensate"), ("stage.started", "c/compensate")] == events(t)
    assert ("RUNNING", "running", ("a/compensate",), S.TERMINAL, True) == h.compensating()

    t = h.done(h.one(t, "c/compensate"), ok())
    assert {"c/compensate": S.SUCCEEDED, "a/compensate": S.RUNNING} == h.written(t)
    assert ("RUNNING", "running", (), S.TERMINAL, True) == h.compensating()

    t = h.done(h.one(t, "a/compensate"), ok())
    assert ({"a/compensate": S.SUCCEEDED}, True) == (h.written(t), t.finished)
    assert [
        ("stage.completed", "a/compensate"),
        ("compensation.completed", None),
        ("workflow.completed", None),
    ] == events(t)
    assert "done" == only([e for e in t.events if e.kind == "compensation.completed"]).message
    assert ("TERMINAL", "done", (), S.TERMINAL, False) == h.compensating()
    assert S.NOT_STARTED == h.status("e/compensate")  # it failed: nothing to undo
    assert "b/compensate" not in [spec.ref_id for spec in h.state.specs]  # b declares none
    kinds = [e.kind for step in h.log for e in step.events]
    assert (1, 1, 1) == (
        kinds.count("compensation.started"),
        kinds.count("compensation.completed"),
        kinds.count("workflow.completed"),
    )


def parallel_saga() -> Saga:
    return Saga(
        Stage("p", "t", compensate="undo"),
        Stage("q", "t", compensate="undo"),
        Stage("r", "t", compensate="undo"),
        Stage("hold", "t"),
        Stage("never", "t", requisites=["hold"], compensate="undo"),
    )


def compensation_order(h: Saga, t: Step) -> list[str]:
    """Complete every compensation from the one ``t`` dispatched on; their ref ids, in the order they ran."""
    order: list[str] = []
    while not t.finished:
        run = only(t.dispatch)
        order.append(h.refs([run])[0])
        t = h.done(run, ok())
    return order


def test_a_cancel_compensates_in_reverse_order_of_completion_whatever_the_declaration_order() -> None:
    """r ends first, then p, then q: q, p, r are undone; the running hold is cancelled first; the run ends
    CANCELED with its cancel_reason."""
    h = parallel_saga()
    runs = h.by_ref(h.start())
    for ref in "rpq":
        h.tick()
        h.done(runs[ref], ok())
    t = h.cancel("customer left")
    assert {
        "hold": S.CANCELED,
        "never": S.CANCELED,  # not started: canceled with the run
        "q/compensate": S.RUNNING,
    } == h.written(t)
    assert ([runs["hold"].id], {"cancel", runs["hold"].id}) == (t.cancel_runs, set(t.consumed))
    assert ("RUNNING", "running", ("p/compensate", "r/compensate"), S.CANCELED, True) == h.compensating()
    assert "customer left" == h.record().cancel_reason
    assert ["q/compensate", "p/compensate", "r/compensate"] == compensation_order(h, t)
    assert ("CANCELED", "done", (), S.CANCELED, False) == h.compensating()
    assert ("customer left", S.NOT_STARTED) == (h.record().cancel_reason, h.status("never/compensate"))


@pytest.mark.parametrize("first", ["p", "q"])
def test_stages_that_ended_in_the_same_turn_are_compensated_in_reverse_order_of_their_results(first: str) -> None:
    """Results folded in one turn still have an order (the order they were folded): the later is undone first."""
    h = parallel_saga()
    runs = h.by_ref(h.start())
    h.tick()
    h.done(runs["r"], ok())
    h.tick()
    second = "q" if first == "p" else "p"
    t = h.batch((runs[first], ok()), (runs[second], ok()))  # one turn, in either order
    assert {"p": S.SUCCEEDED, "q": S.SUCCEEDED} == h.written(t)
    expected = [f"{second}/compensate", f"{first}/compensate", "r/compensate"]
    assert expected == compensation_order(h, h.cancel(""))
    assert (S.CANCELED, "canceled") == (h.run_status(), h.record().cancel_reason)


def test_stages_that_ended_in_different_turns_at_the_same_clock_reading_keep_their_completion_order() -> None:
    h = Saga(
        Stage("y", "t", requisites=["x"], compensate="undo"),  # declared first, ends second
        Stage("x", "t", compensate="undo"),
        Stage("z", "t", requisites=["y"]),
    )
    rx = only(h.start().dispatch)
    ry = h.one(h.done(rx, ok()), "y")  # no tick: the clock stands still
    h.one(h.done(ry, ok()), "z")
    assert ["y/compensate", "x/compensate"] == compensation_order(h, h.cancel("stop"))


@pytest.mark.parametrize("unknown_ok", [True, False])
def test_a_call_in_flight_is_compensated_first_and_only_if_its_type_says_so(unknown_ok: bool) -> None:
    h = Saga(
        Stage("reserve", "t", compensate="undo"),
        Stage("pay", "charge", requisites=["reserve"], compensate="undo"),
        unknown=("charge",) if unknown_ok else (),
    )
    h.tick()
    rpay = h.one(h.done(only(h.start().dispatch), ok(reserve_id="r-1")), "pay")
    t = h.cancel("")
    first = "pay/compensate" if unknown_ok else "reserve/compensate"
    assert {"pay": S.CANCELED, first: S.RUNNING} == h.written(t)
    assert ([rpay.id], {"cancel", rpay.id}) == (t.cancel_runs, set(t.consumed))  # cancelled before it starts
    assert h.done(rpay, ok()).empty  # the cancelled call's late result changes nothing
    order = compensation_order(h, t)
    assert (["pay/compensate", "reserve/compensate"] if unknown_ok else ["reserve/compensate"]) == order
    assert ("CANCELED", "done", (), S.CANCELED, False) == h.compensating()


def declined_saga() -> tuple[Saga, RunTask]:
    """a and b (each compensated by ``undo``) succeed, c's payment is declined: b's compensation is dispatched."""
    h = Saga(
        Stage("a", "t", compensate="undo"),
        Stage("b", "t", requisites=["a"], compensate="undo"),
        Stage("c", "pay", requisites=["b"]),
    )
    run = only(h.start().dispatch)
    for _ in "ab":
        h.tick()
        run = only(h.done(run, ok()).dispatch)
    return h, h.one(h.done(run, TaskResult.terminal("declined")), "b/compensate")


def test_a_cancel_while_compensating_is_recorded_consumes_its_row_and_changes_nothing_else() -> None:
    h, rb_undo = declined_saga()
    before = (h.compensating(), list(h.state.runs))
    t = h.cancel("stop it")
    assert (["cancel"], {}, [], [], [], [], False) == (
        t.consumed,
        t.stages,
        t.emitted,
        t.events,
        t.dispatch,
        t.cancel_runs,
        t.finished,
    )
    assert t.workflow is not None
    assert (S.RUNNING, "stop it") == (t.workflow.status, t.workflow.cancel_reason)
    assert before == (h.compensating(), list(h.state.runs))
    t = h.cancel("again")  # a second one: consumed, the first reason kept, nothing written
    assert (["cancel"], None, {}, []) == (t.consumed, t.workflow, t.stages, t.events)
    ra_undo = h.one(h.done(rb_undo, ok()), "a/compensate")  # the compensations go on
    t = h.done(ra_undo, ok())
    assert ("TERMINAL", "done", (), S.TERMINAL, False) == h.compensating()  # it was failing: TERMINAL
    assert (True, "stop it") == (t.finished, h.record().cancel_reason)
    t = h.cancel("late")  # the run has ended: the row is dropped if still there, nothing else
    assert ([], ["cancel"], None, "stop it") == (t.consumed, t.discarded, t.workflow, h.record().cancel_reason)


def test_a_compensation_that_fails_is_recorded_the_next_ones_still_run_and_the_run_says_failed() -> None:
    h, rb_undo = declined_saga()
    flaky = ErrorInfo.capped("TransientError", "later", attempt=1, transient=True)
    t = h.done(rb_undo, error=flaky)  # its type's retries apply, the run halted meanwhile
    retry = only([m for m in t.emitted if isinstance(m, RunTask)])
    assert (2, [], ("RUNNING", "running", ("a/compensate",), S.TERMINAL, True)) == (
        retry.attempt,
        t.dispatch,
        h.compensating(),
    )
    assert [retry] == h.send(retry).dispatch  # the retry row is due: dispatched while halting
    t = h.done(retry, TaskResult.terminal("cannot undo"))
    assert {"b/compensate": S.TERMINAL, "a/compensate": S.RUNNING} == h.written(t)
    failed = only([e for e in t.events if e.kind == "compensation.failed"])
    assert ("b/compensate", S.TERMINAL, "cannot undo") == (failed.stage, failed.status, failed.message)
    t = h.done(h.one(t, "a/compensate"), ok())
    assert ("TERMINAL", "failed", (), S.TERMINAL, False) == h.compensating()
    assert "failed" == only([e for e in t.events if e.kind == "compensation.completed"]).message


def test_a_stage_failing_terminal_runs_its_on_failure_stages_then_the_compensations() -> None:
    h = Saga(
        Stage("a", "t", compensate="undo"),
        Stage("deploy", "push", requisites=["a"], on_failure=[Stage("page", "t")], compensate="undo"),
    )
    h.tick()
    rdeploy = h.one(h.done(only(h.start().dispatch), ok()), "deploy")
    rpage = h.one(h.done(rdeploy, TaskResult.terminal("it broke")), "deploy/page")
    assert ("RUNNING", None, (), None, True) == h.compensating()  # halting for the on_failure stage
    t = h.done(rpage, ok())
    assert {"deploy/page": S.SUCCEEDED, "deploy": S.TERMINAL, "a/compensate": S.RUNNING} == h.written(t)
    assert [
        ("stage.completed", "deploy/page"),
        ("stage.completed", "deploy"),
        ("compensation.started", None),
        ("stage.started", "a/compensate"),
    ] == events(t)
    assert ("RUNNING", "running", (), S.TERMINAL, True) == h.compensating()
    h.done(h.one(t, "a/compensate"), ok())
    assert ("TERMINAL", "done", (), S.TERMINAL, False) == h.compensating()
    assert S.NOT_STARTED == h.status("deploy/compensate")  # it failed: nothing to undo


def test_a_run_that_owes_nothing_ends_at_once_with_no_compensation() -> None:
    """Only SUCCEEDED stages are undone: one that ended FAILED_CONTINUE or SKIPPED (its condition false), or
    failed, owes nothing."""
    h = Saga(
        Stage("soft", "t", compensate="undo", continue_on_failure=True),
        Stage("off", "t", compensate="undo", enabled="False"),
        Stage("pay", "pay", requisites=["soft", "off"], compensate="undo"),
    )
    t = h.done(h.one(h.start(), "soft"), TaskResult.terminal("meh"))
    assert (S.FAILED_CONTINUE, S.SKIPPED) == (h.status("soft"), h.status("off"))
    t = h.done(h.one(t, "pay"), TaskResult.terminal("declined"))
    assert ({"pay": S.TERMINAL}, True, []) == (h.written(t), t.finished, t.dispatch)
    assert ("TERMINAL", None, (), None, False) == h.compensating()
    assert not any(e.kind.startswith("compensation.") for step in h.log for e in step.events)


def test_a_run_its_on_failure_stages_ended_is_no_longer_halting() -> None:
    h = on_failure_run()
    _, rdeploy = h.start().dispatch
    rpage = h.one(h.done(rdeploy, TaskResult.terminal("it broke")), "deploy/page")
    t = h.done(h.one(h.done(rpage, ok()), "deploy/log"), ok())
    assert (True, S.TERMINAL) == (t.finished, h.run_status())
    assert not h.record().halting


def test_a_contained_fault_while_compensating_does_not_leave_the_compensation_running() -> None:
    h = Saga(Stage("a", "t", compensate="undo"), Stage("b", "pay", requisites=["a"]))
    rb = h.one(h.done(h.one(h.start(), "a"), ok()), "b")
    rundo = h.one(h.done(rb, TaskResult.terminal("declined")), "a/compensate")
    t = h.send(FailWorkflow(error=ErrorInfo.engine("HandlerBug", "a fault local to the run")))
    assert (True, S.TERMINAL, [rundo.id]) == (t.finished, h.run_status(), t.cancel_runs)
    assert S.CANCELED == h.status("a/compensate")
    assert h.record().compensation in ("done", "failed")
