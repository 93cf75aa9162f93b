"""Unit tests of run control and coordination on the pure handlers, turn by turn (issue 12).

No engine, no I/O: each turn is folded by the routing tests' harness, which
checks the join counters of the turn, of the applied state and of a state
rebuilt from the committed records after every turn.

Covered: pause (results recorded, nothing dispatched or started, no
completion; ``cancel`` cancels running calls and keeps their rows), resume
(deferred stages start, rows redelivered), a deadline and a cancel on a paused
run, skip, restart in place (epochs, generations, three completions, from a
stage, a compensated run), signal waits with a timeout, deferred choices,
milestones, workflow mutexes (FIFO, no slot held) and cancel regions.
"""

from __future__ import annotations

from runs import initial_state
from test_handlers import NO_WAIT, Step, ok, only
from test_routing_handlers import Routing, events

from stabilize_aio import Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.handlers import apply
from stabilize_aio.messages.durable import (
    CancelRegion,
    CancelWorkflow,
    PauseWorkflow,
    RestartWorkflow,
    ResumeWorkflow,
    RunTask,
    SignalStage,
    SignalTimeout,
    SkipStage,
    StageTimeout,
)
from stabilize_aio.messages.memory import TaskDone, TaskOutcome
from stabilize_aio.model.values import Signal
from stabilize_aio.state.turn import Turn

S = WorkflowStatus


class Control(Routing):
    """The routing harness with the operator's verbs as rows."""

    def pause(self, *, cancel: bool = False, reason: str = "") -> Step:
        return self.send(PauseWorkflow(id=f"pause:{len(self.log)}", reason=reason, cancel=cancel))

    def resume(self) -> Step:
        return self.send(ResumeWorkflow(id=f"resume:{len(self.log)}"))

    def restart(self, stage: str | None = None) -> Step:
        i = -1 if stage is None else self.i(stage)
        epoch = self.state.record.epoch
        return self.send(RestartWorkflow(id=f"restart:{epoch}", stage=i, epoch=epoch))

    def skip(self, ref: str) -> Step:
        return self.send(SkipStage(id=f"skip:{len(self.log)}", stage=self.i(ref)))

    def signal(self, ref: str, name: str = "go") -> Step:
        return self.send(SignalStage(id=f"signal:{len(self.log)}", stage=self.i(ref), signal=Signal(name=name)))

    def epoch(self) -> int:
        return self.state.record.epoch

    def redelivered(self, run: RunTask) -> list[RunTask]:
        """What a RunTask's redelivery (a timer, recovery) dispatches now."""
        return self.send(run).dispatch


def kinds(step: Step) -> list[str]:
    return [e.kind for e in step.events]


# pause and resume ---------------------------------------------------------------------


def test_a_paused_run_records_results_but_dispatches_and_starts_nothing_until_resume() -> None:
    h = Control(Stage("a", tasks=["t", "t"]), Stage("b", "t"), Stage("c", "t", requisites=["b"]))
    ra, rb = h.start().dispatch
    p = h.pause(reason="maintenance")
    assert (S.PAUSED, "maintenance", ["workflow.paused"], []) == (
        h.run_status(), h.state.record.pause_reason, kinds(p), p.cancel_runs
    )  # fmt: skip
    t1 = h.done(ra, ok(x=1))  # a's next task: its row is written, not dispatched
    second = only([m for m in t1.emitted if isinstance(m, RunTask)])
    assert ([], 1, S.RUNNING) == (t1.dispatch, second.task, h.status("a"))
    t2 = h.done(rb, ok())  # b ends: c is ready but does not start
    assert (S.SUCCEEDED, S.NOT_STARTED, (h.i("c"),)) == (h.status("b"), h.status("c"), h.state.record.deferred)
    assert ([], []) == (t2.dispatch, [m for m in t2.emitted if isinstance(m, RunTask)])
    assert h.redelivered(second) == []  # a timer or recovery delivering it while paused: not dispatched
    r = h.resume()
    assert (S.RUNNING, None, (), True) == (h.run_status(), h.state.record.pause_reason, h.state.record.deferred,
                                           r.effects.redeliver)  # fmt: skip
    assert ["c"] == h.refs(r.dispatch)  # the deferred stage starts; a's row comes back through the redelivery
    assert ["t"] == [h.state.specs[m.stage].tasks[m.task] for m in h.redelivered(second)]


def test_pause_with_cancel_cancels_running_calls_and_keeps_their_rows() -> None:
    h = Control(Stage("a", "t"), Stage("b", "t"))
    ra, rb = h.start().dispatch
    p = h.pause(cancel=True)
    assert ({ra.id, rb.id}, [], []) == (set(p.cancel_runs), p.consumed[1:], p.emitted)
    assert [ra.id, rb.id] == [h.run(ref).run_id for ref in ("a", "b")]  # same rows: same attempt, same key
    h.resume()
    assert [ra] == h.redelivered(ra)  # the row as it was, dispatched again


def test_a_paused_run_does_not_complete_until_resumed() -> None:
    h = Control(Stage("a", "t"))
    ra = only(h.start().dispatch)
    h.pause()
    t = h.done(ra, ok())
    assert (S.SUCCEEDED, S.PAUSED, False) == (h.status("a"), h.run_status(), t.finished)
    r = h.resume()
    assert (S.SUCCEEDED, True) == (h.run_status(), r.finished)
    assert ["workflow.resumed", "workflow.completed"] == kinds(r)


def test_pause_and_resume_are_idempotent_and_refuse_nothing_late() -> None:
    h = Control(Stage("a", "t"))
    ra = only(h.start().dispatch)
    h.pause()
    again = h.pause()
    assert ([], None) == (kinds(again), again.workflow)  # paused already: only its row goes
    h.resume()
    again = h.resume()
    assert ([], None, S.RUNNING) == (kinds(again), again.workflow, h.run_status())
    h.done(ra, ok())
    late = h.pause()
    assert (S.SUCCEEDED, None) == (h.run_status(), late.workflow)


def test_deadlines_run_while_paused_and_a_cancel_ends_a_paused_run() -> None:
    h = Control(Stage("a", "t", stage_timeout=5), Stage("b", "t"))
    h.start()
    h.pause()
    run = h.run("a")
    assert run.timer_id is not None
    t = h.send(StageTimeout(id=run.timer_id, stage=h.i("a"), generation=0))
    assert (S.TERMINAL, S.TERMINAL) == (h.status("a"), h.run_status())  # through RUNNING: the table's way
    assert t.finished
    h2 = Control(Stage("a", "t"), Stage("b", "t", requisites=["a"]))
    ra = only(h2.start().dispatch)
    h2.pause()
    h2.done(ra, ok())  # b deferred
    c = h2.send(CancelWorkflow(id="cancel:0", reason="stop"))
    assert (S.CANCELED, S.CANCELED, (), True) == (h2.run_status(), h2.status("b"), h2.state.record.deferred,
                                                  c.finished)  # fmt: skip


# skip --------------------------------------------------------------------------------------


def test_skip_ends_a_running_stage_skipped_for_real_and_its_downstream_goes_on() -> None:
    h = Control(Stage("a", "t"), Stage("b", "t"), Stage("c", "t", requisites=["a", "b"]))
    ra, rb = h.start().dispatch
    t = h.skip("a")
    assert ([ra.id], S.SKIPPED, False) == (t.cancel_runs, h.status("a"), h.run("a").pruned)
    assert [("stage.skipped", "a")] == events(t)
    assert "skipped by an operator" == t.events[0].message
    t2 = h.done(rb, ok())
    assert ["c"] == h.refs(t2.dispatch)
    late = h.done(ra, ok())  # a late result of the cancelled call changes nothing
    assert ({}, S.SKIPPED) == (late.stages, h.status("a"))


def test_skip_of_a_stage_not_started_ends_it_and_its_requisites_end_later_without_starting_it() -> None:
    h = Control(
        Stage("a", "t"), Stage("x", "t"), Stage("b", "t", requisites=["a"]), Stage("c", "t", requisites=["b", "x"])
    )
    ra, rx = h.start().dispatch
    t = h.skip("b")
    assert (S.SKIPPED, S.NOT_STARTED, []) == (h.status("b"), h.status("c"), t.dispatch)  # c waits for x
    t2 = h.done(ra, ok())
    assert ([], S.SKIPPED) == (t2.dispatch, h.status("b"))  # b ended already: a's end does not start it
    assert ["c"] == h.refs(h.done(rx, ok()).dispatch)


# restart in place -------------------------------------------------------------------------


def failing_run() -> tuple[Control, RunTask]:
    """a succeeds, b fails TERMINAL, c (after b) never runs; d (after a) succeeded."""
    h = Control(Stage("a", "t"), Stage("b", "t"), Stage("c", "t", requisites=["b"]), Stage("d", "t", requisites=["a"]))
    ra, rb = h.start().dispatch
    rd = only(h.done(ra, ok(x=1)).dispatch)
    h.done(rd, ok(y=2))
    h.done(rb, TaskResult.terminal("boom"))
    assert S.TERMINAL == h.run_status()
    return h, rb


def test_restart_redoes_the_failed_stages_and_their_downstream_in_a_new_epoch() -> None:
    h, rb = failing_run()
    t = h.restart()
    assert (S.RUNNING, 1, 0) == (h.run_status(), h.epoch(), h.state.record.jumps)
    assert {"a": 0, "b": 1, "c": 0, "d": 0} == h.generations()  # kept: a and d; c never ran (nothing to reset)
    assert ({"x": 1}, {"y": 2}) == (h.run("a").outputs, h.run("d").outputs)
    rb2 = only(t.dispatch)
    assert (["b"], True) == (h.refs([rb2]), rb2.id != rb.id)  # a new generation: a new key
    assert ("workflow.restarted", "workflow.restarted:1") == (t.events[0].kind, t.events[0].key)
    rc = only(h.done(rb2, ok()).dispatch)
    done = h.done(rc, ok())
    assert (S.SUCCEEDED, True) == (h.run_status(), done.finished)
    completed = [e.key for s in h.log for e in s.events if e.kind == "workflow.completed"]
    assert ["workflow.completed:0", "workflow.completed:1"] == completed


def test_restarting_twice_gives_three_completions_and_unique_event_keys() -> None:
    h, _ = failing_run()
    for _ in range(2):
        rb = only(h.restart().dispatch)
        h.done(rb, TaskResult.terminal("again"))
    completed = [e.key for s in h.log for e in s.events if e.kind == "workflow.completed"]
    assert ["workflow.completed:0", "workflow.completed:1", "workflow.completed:2"] == completed
    keys = [e.key for s in h.log for e in s.events]
    assert len(keys) == len(set(keys))
    assert (2, {"a": 0, "b": 2, "c": 0, "d": 0}) == (h.epoch(), h.generations())


def test_restart_from_a_stage_of_a_succeeded_run_and_a_repeat_is_dropped() -> None:
    h = Control(Stage("a", "t"), Stage("b", "t", requisites=["a"]))
    ra = only(h.start().dispatch)
    h.done(only(h.done(ra, ok()).dispatch), ok())
    assert S.SUCCEEDED == h.run_status()
    t = h.restart("b")
    assert (["b"], {"a": 0, "b": 1}) == (h.refs(t.dispatch), h.generations())
    repeat = h.send(RestartWorkflow(id="restart:0", stage=h.i("b"), epoch=0))  # the same command, late
    assert (None, ["restart:0"]) == (repeat.workflow, repeat.discarded)


def test_restart_of_a_compensated_run_redoes_what_its_compensations_undid() -> None:
    h = Control(Stage("pay", "t", compensate="refund"), Stage("ship", "t", requisites=["pay"]))
    rp = only(h.start().dispatch)
    rs = only(h.done(rp, ok()).dispatch)
    rc = only(h.done(rs, TaskResult.terminal("no truck")).dispatch)  # the refund
    h.done(rc, ok())
    assert (S.TERMINAL, "done") == (h.run_status(), h.state.record.compensation)
    t = h.restart()
    assert (["pay"], None) == (h.refs(t.dispatch), h.state.record.compensation)  # paid again, then shipped
    assert (1, 1, 1) == (h.run("pay").generation, h.run("ship").generation, h.run("pay/compensate").generation)


def test_restart_arms_the_timeout_of_the_new_epoch() -> None:
    h = Control(Stage("a", "t"))
    h.state = initial_state(Workflow(application="app", name="wf", stages=[Stage("a", "t")], timeout=60), "wf-1", {})
    first = h.start()
    assert ["deadline:0"] == [m.id for m in first.emitted if not isinstance(m, RunTask)]
    h.done(only(first.dispatch), TaskResult.terminal("x"))
    t = h.restart()
    assert ["deadline:1"] == [m.id for m in t.emitted if not isinstance(m, RunTask)]


# signal waits with a timeout ---------------------------------------------------------------


def suspended(on_timeout: str) -> tuple[Control, SignalTimeout]:
    h = Control(Stage("gate", "t"), Stage("next", "t", requisites=["gate"]))
    run = only(h.start().dispatch)
    t = h.done(run, TaskResult.suspend(timeout=30, on_timeout=on_timeout))
    wait = only([m for m in t.emitted if isinstance(m, SignalTimeout)])
    assert (S.SUSPENDED, wait.id, h.now + 30) == (h.status("gate"), h.run("gate").wait_id, wait.deliver_at)
    return h, wait


def test_a_signal_wait_that_runs_out_fails_skips_or_calls_again() -> None:
    h, wait = suspended("fail")
    t = h.send(wait)
    error = h.run("gate").error
    assert (S.TERMINAL, "SignalTimeout", S.TERMINAL) == (h.status("gate"), error and error.type, h.run_status())
    assert ([wait.id], True) == (t.consumed, t.finished)
    h, wait = suspended("skip")
    t = h.send(wait)
    assert (S.SKIPPED, ["next"]) == (h.status("gate"), h.refs(t.dispatch))
    h, wait = suspended("continue")
    t = h.send(wait)
    again = only(t.dispatch)
    assert (S.RUNNING, True) == (h.status("gate"), h.run("gate").context_update["_signal_timed_out"])
    assert ["gate"] == h.refs([again])


def test_a_signal_first_ends_the_wait_and_its_timeout_row_goes() -> None:
    h, wait = suspended("fail")
    t = h.signal("gate")
    assert (wait.id in t.consumed, None, S.RUNNING) == (True, h.run("gate").wait_id, h.status("gate"))
    late = h.send(wait)
    assert ([wait.id], S.RUNNING) == (late.discarded, h.status("gate"))


# deferred choice ----------------------------------------------------------------------------


def test_the_first_stage_of_a_deferred_choice_to_commit_wins_and_the_others_are_pruned() -> None:
    h = Control(
        Stage("alice", "t", deferred_choice_group="reviewers"),
        Stage("bob", "t", deferred_choice_group="reviewers"),
        Stage("after_bob", "t", requisites=["bob"]),
        Stage("merge", "t", requisites=["alice", "after_bob"], join_type="OR"),
    )
    ra, rb = h.start().dispatch
    polled = h.done(rb, TaskResult.running())  # running: no commitment
    assert ({}, S.RUNNING) == (h.state.record.chosen, h.status("alice"))
    t = h.done(ra, ok(verdict="yes"))
    assert ({"reviewers": h.i("alice")}, S.SKIPPED, True) == (h.state.record.chosen, h.status("bob"),
                                                            h.run("bob").pruned)  # fmt: skip
    poll = only([m for m in polled.emitted if isinstance(m, RunTask)])
    assert poll.id in t.cancel_runs  # bob's pending call is cancelled for real
    assert (S.SKIPPED, ["merge"]) == (h.status("after_bob"), h.refs(t.dispatch))


def test_a_signal_wins_a_deferred_choice() -> None:
    h = Control(Stage("a", "t", deferred_choice_group="g"), Stage("b", "t", deferred_choice_group="g"))
    ra, rb = h.start().dispatch
    h.done(rb, TaskResult.suspend())
    t = h.signal("b")
    assert (S.SKIPPED, [ra.id]) == (h.status("a"), t.cancel_runs)


# milestones ---------------------------------------------------------------------------------


def test_a_milestone_stage_waits_runs_while_it_holds_and_is_skipped_once_passed() -> None:
    h = Control(
        Stage("approve", "t"),
        Stage("prep", "t"),
        Stage("edit", "t", requisites=["prep"], milestone_ref_id="approve"),
    )
    rapp, rprep = h.start().dispatch
    t = h.done(rprep, ok())
    assert ([], S.NOT_STARTED, (h.i("edit"),)) == (t.dispatch, h.status("edit"), h.state.record.waits)
    t2 = h.done(rapp, TaskResult.suspend())  # the milestone is reached: edit runs
    assert (["edit"], ()) == (h.refs(t2.dispatch), h.state.record.waits)
    h2 = Control(
        Stage("approve", "t"), Stage("prep", "t"), Stage("edit", "t", requisites=["prep"], milestone_ref_id="approve")
    )
    rapp, rprep = h2.start().dispatch
    h2.done(rapp, ok())  # passed SUSPENDED without stopping there
    t3 = h2.done(rprep, ok())
    assert (S.SKIPPED, S.SUCCEEDED) == (h2.status("edit"), h2.run_status())
    assert "milestone 'approve' passed SUSPENDED (SUCCEEDED)" == t3.events[-2].message


# mutexes ------------------------------------------------------------------------------------


def test_stages_holding_one_key_run_one_at_a_time_first_come_first_served() -> None:
    h = Control(
        Stage("m1", "t", mutex_key="db"),
        Stage("other", "t"),
        Stage("m2", "t", mutex_key="db"),
        Stage("m3", "t", mutex_key="db"),
    )
    start = h.start()
    assert ["m1", "other"] == h.refs(start.dispatch)  # m2 and m3 wait: no call, no slot
    assert [h.i("m2"), h.i("m3")] == list(h.state.record.waits)
    r2 = only(h.done(start.dispatch[0], ok()).dispatch)
    assert (["m2"], [h.i("m3")]) == (h.refs([r2]), list(h.state.record.waits))
    r3 = only(h.done(r2, ok()).dispatch)
    assert ["m3"] == h.refs([r3])
    h.done(start.dispatch[1], ok())
    assert S.RUNNING == h.run_status()
    assert h.done(r3, ok()).finished


# cancel regions -----------------------------------------------------------------------------


def test_a_cancel_region_cancels_its_stages_for_real_and_the_run_follows_its_failure_rules() -> None:
    h = Control(
        Stage("pay", "t", cancel_region="payment"),
        Stage("confirm", "t", requisites=["pay"], cancel_region="payment"),
        Stage("notify", "t"),
    )
    rp, rn = h.start().dispatch
    t = h.send(CancelRegion(id="region:1", region="payment"))
    assert ([rp.id], S.CANCELED, S.CANCELED, S.RUNNING) == (
        t.cancel_runs, h.status("pay"), h.status("confirm"), h.run_status()
    )  # fmt: skip
    done = h.done(rn, ok())
    assert (S.CANCELED, True) == (h.run_status(), done.finished)


# regressions (found by review) ------------------------------------------------------------


def current_run(h: Control, ref: str) -> RunTask:
    """The RunTask of ``ref``'s current call (from its run's ids)."""
    i = h.i(ref)
    run = h.state.runs[i]
    assert run.run_id is not None
    spec = h.state.specs[i]
    task = spec.tasks[run.task_index]
    return RunTask(id=run.run_id, stage=i, task=run.task_index, task_type=task, generation=run.generation,
                   attempt=run.attempt)  # fmt: skip


def test_a_forward_jump_while_paused_ends_its_source_and_the_run_completes_after_resume() -> None:
    h = Control(Stage("a", "t"), Stage("b", "t", requisites=["a"]), Stage("c", "t", requisites=["b"]))
    ra = only(h.start().dispatch)
    h.pause()
    h.done(ra, TaskResult.jump_to("c"))
    assert (S.SUCCEEDED, S.SKIPPED) == (h.status("a"), h.status("b"))
    rc = only(h.resume().dispatch)
    assert h.done(rc, ok()).finished


def test_a_pause_folded_after_a_result_starts_none_of_the_calls_of_its_turn() -> None:
    h = Control(Stage("a", tasks=["t", "t"]))
    ra = only(h.start().dispatch)

    def fold(turn: Turn) -> None:
        apply(turn, TaskDone(run=ra, outcome=TaskOutcome(result=ok(), retry=NO_WAIT)))
        apply(turn, PauseWorkflow(id="pause:x", cancel=True))

    step = h._turn(fold)
    second = only([m for m in step.emitted if isinstance(m, RunTask)])  # a's next task: written, not started
    assert ([], S.PAUSED, 1) == (step.dispatch, h.run_status(), second.task)
    assert h.resume().effects.redeliver
    assert [second] == h.redelivered(second)


def test_restart_starts_the_stages_that_never_started_too() -> None:
    h = Control(Stage("m1", "t", mutex_key="k"), Stage("m2", "t", mutex_key="k"), Stage("f", "t"))
    _, rf = h.start().dispatch
    h.done(rf, TaskResult.terminal("boom"))  # m1 cancelled with the run, m2 never started (it waited)
    assert (S.TERMINAL, S.CANCELED, S.NOT_STARTED) == (h.run_status(), h.status("m1"), h.status("m2"))
    by_ref = h.by_ref(h.restart())
    assert (["f", "m1"], [h.i("m2")]) == (sorted(by_ref), list(h.state.record.waits))  # m2 waits behind m1
    rm2 = only(h.done(by_ref["m1"], ok()).dispatch)
    assert ["m2"] == h.refs([rm2])
    h.done(by_ref["f"], ok())
    assert h.done(rm2, ok()).finished
    assert (S.SUCCEEDED, S.SUCCEEDED) == (h.run_status(), h.status("m2"))


def test_restart_starts_a_stage_that_became_ready_while_the_run_was_paused() -> None:
    h = Control(Stage("a", "t"), Stage("b", "t"), Stage("c", "t", requisites=["b"]))
    ra, rb = h.start().dispatch
    h.pause()
    h.done(rb, ok())  # c deferred
    h.done(ra, TaskResult.terminal("x"))  # the run ends TERMINAL, though paused
    record = h.state.record
    assert (S.TERMINAL, S.NOT_STARTED, (), None) == (h.run_status(), h.status("c"), record.deferred,
                                                     record.pause_reason)  # fmt: skip
    r = h.restart()
    assert ["a", "c"] == sorted(h.refs(r.dispatch))
