"""Unit tests of claims on shared keys on the pure handlers (issue 12): admission and global mutexes.

The handlers only write claims (inserted with the turn that wants the key,
deleted with the turn that ends its stage or run) and name the keys to grant
after the commit; the store grants them (tests/acceptance/test_admission.py).
Here a ``Granted`` row is fed by hand.
"""

from __future__ import annotations

from runs import initial_state
from test_control_handlers import Control
from test_handlers import ok, only

from stabilize_aio import Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.messages.durable import CancelWorkflow, Granted, RestartWorkflow, StartDeadline
from stabilize_aio.state.commit import Claim

S = WorkflowStatus


def admitted_harness(*, start_deadline: float | None = None) -> Control:
    h = Control(Stage("a", "t"), Stage("b", "t", requisites=["a"]))
    wf = Workflow(
        application="app", name="wf", concurrency_key="etl", max_concurrent=2, keep_waiting=False,
        start_deadline=start_deadline, stages=[Stage("a", "t"), Stage("b", "t", requisites=["a"])],
    )  # fmt: skip
    h.state = initial_state(wf, "wf-1", {})
    return h


def test_a_run_under_an_admission_limit_waits_buffered_with_its_claim() -> None:
    h = admitted_harness(start_deadline=60)
    t = h.start()
    assert (S.BUFFERED, [], ("admit:etl",)) == (h.run_status(), t.dispatch, h.state.record.claimed)
    assert [Claim(key="admit:etl", stage=-1, generation=0, limit=2, purge=True)] == t.commit.claims
    assert (["admit:etl"], False) == (t.effects.keys, t.effects.freed)
    assert [StartDeadline(id="start_deadline:0", deliver_at=60.0)] == t.emitted  # from its creation (0 here)
    g = h.send(Granted(id="grant:-1:0", key="admit:etl", stage=-1, generation=0))
    assert (S.RUNNING, ["a"]) == (h.run_status(), h.refs(g.dispatch))
    assert {"start_deadline:0", "grant:-1:0"} <= set(g.discarded) | set(g.consumed)
    again = h.send(Granted(id="grant:-1:0", key="admit:etl", stage=-1, generation=0))  # a repeat: nothing
    assert (None, []) == (again.workflow, again.dispatch)


def test_the_end_of_an_admitted_run_releases_its_slot_and_frees_the_key() -> None:
    h = admitted_harness()
    h.start()
    ra = only(h.send(Granted(id="grant:-1:0", key="admit:etl", stage=-1, generation=0)).dispatch)
    rb = only(h.done(ra, ok()).dispatch)
    end = h.done(rb, ok())
    assert (S.SUCCEEDED, True, ["admit:etl"], True) == (
        h.run_status(), end.commit.release_all, end.effects.keys, end.effects.freed
    )  # fmt: skip


def test_a_buffered_run_is_cancelled_or_misses_its_start_deadline() -> None:
    h = admitted_harness(start_deadline=60)
    h.start()
    c = h.send(CancelWorkflow(id="cancel:0", reason="no"))
    assert (S.CANCELED, True, [S.CANCELED, S.CANCELED]) == (
        h.run_status(), c.commit.release_all, [r.status for r in h.state.runs]
    )  # fmt: skip
    h2 = admitted_harness(start_deadline=60)
    h2.start()
    d = h2.send(StartDeadline(id="start_deadline:0"))
    assert (S.CANCELED, "start_deadline: the run did not start within 60s", True) == (
        h2.run_status(), h2.state.record.cancel_reason, d.finished
    )  # fmt: skip


def test_a_restarted_admission_run_waits_for_a_slot_again_then_starts_what_was_reset() -> None:
    h = admitted_harness()
    h.start()
    ra = only(h.send(Granted(id="grant:-1:0", key="admit:etl", stage=-1, generation=0)).dispatch)
    h.done(only(h.done(ra, ok()).dispatch), TaskResult.terminal("x"))
    r = h.send(RestartWorkflow(id="restart:0", stage=-1, epoch=0))
    assert (S.BUFFERED, 1, (h.i("b"),), []) == (h.run_status(), h.epoch(), h.state.record.deferred, r.dispatch)
    assert [Claim(key="admit:etl", stage=-1, generation=1, limit=2, purge=True)] == r.commit.claims
    stale = h.send(Granted(id="grant:-1:0", key="admit:etl", stage=-1, generation=0))  # the old epoch's
    assert S.BUFFERED == h.run_status()
    assert [] == stale.dispatch
    g = h.send(Granted(id="grant:-1:1", key="admit:etl", stage=-1, generation=1))
    assert (S.RUNNING, ["b"]) == (h.run_status(), h.refs(g.dispatch))


def test_a_global_mutex_stage_claims_waits_starts_when_granted_and_releases_at_its_end() -> None:
    h = Control(Stage("m", "t", mutex_key="db", mutex_scope="global"), Stage("x", "t"))
    t = h.start()
    assert (["x"], [Claim(key="mutex:db", stage=0, generation=0)]) == (h.refs(t.dispatch), t.commit.claims)
    assert ((0,), 1, ("mutex:db",)) == (h.state.record.waits, h.run("m").claim, h.state.record.claimed)
    g = h.send(Granted(id="grant:0:0", key="mutex:db", stage=0, generation=0))
    rm = only(g.dispatch)
    assert (S.RUNNING, 2, ()) == (h.status("m"), h.run("m").claim, h.state.record.waits)
    end = h.done(rm, ok())
    assert ([0], ["mutex:db"], True, 0) == (end.commit.releases, end.effects.keys, end.effects.freed, h.run("m").claim)


def test_a_global_mutex_waiter_cancelled_with_its_run_releases_its_claim() -> None:
    h = Control(Stage("m", "t", mutex_key="db", mutex_scope="global"), Stage("x", "t"))
    h.start()
    c = h.send(CancelWorkflow(id="cancel:0", reason=""))
    assert (S.CANCELED, True, 0) == (h.run_status(), c.commit.release_all, h.run("m").claim)
    late = h.send(Granted(id="grant:0:0", key="mutex:db", stage=0, generation=0))
    assert ([], S.CANCELED) == (late.dispatch, h.status("m"))


# regressions (found by review) ------------------------------------------------------------


def test_a_claim_made_in_the_turn_that_ends_the_run_is_never_written() -> None:
    h = Control(
        Stage("a", "t"),
        Stage("m", "t", requisites=["a"], mutex_key="db", mutex_scope="global"),
        Stage("f", "t", requisites=["a"], enabled="nosuch > 1"),  # fails when ready: the run ends TERMINAL
    )
    ra = only(h.start().dispatch)
    t = h.done(ra, ok())
    assert (S.TERMINAL, None, True) == (h.run_status(), t.commit.claims, t.commit.release_all)
    assert ((), 0) == (h.state.record.claimed, h.run("m").claim)


def test_a_claim_released_in_its_own_turn_goes_with_it_and_a_new_one_after_a_release_stays() -> None:
    h = Control(Stage("m", "t", mutex_key="db", mutex_scope="global"), Stage("x", "t"))
    t = h.start()
    assert 1 == len(t.commit.claims or [])
    skipped = h.skip("m")  # a waiting stage skipped: its claim (from an earlier turn) is deleted
    assert ([0], None) == (skipped.commit.releases, skipped.commit.claims)


def test_a_buffered_run_refuses_skip_in_its_handler_too() -> None:
    h = admitted_harness()
    h.start()
    t = h.skip("a")
    assert (S.BUFFERED, S.NOT_STARTED, {}) == (h.run_status(), h.status("a"), t.stages)


def test_the_start_deadline_of_a_restarted_admission_run_counts_from_the_restart() -> None:
    h = admitted_harness(start_deadline=60)
    h.start()
    ra = only(h.send(Granted(id="grant:-1:0", key="admit:etl", stage=-1, generation=0)).dispatch)
    h.now = 1000.0
    h.done(ra, TaskResult.terminal("x"))
    r = h.send(RestartWorkflow(id="restart:0", stage=-1, epoch=0))
    assert [StartDeadline(id="start_deadline:1", deliver_at=1060.0)] == [
        m for m in r.emitted if isinstance(m, StartDeadline)
    ]


def test_a_milestone_waiter_waits_while_its_milestone_waits_for_a_global_mutex() -> None:
    h = Control(
        Stage("m", "t", mutex_key="db", mutex_scope="global"),
        Stage("w", "t", milestone_ref_id="m", milestone_status="RUNNING"),
    )
    h.start()
    assert (S.NOT_STARTED, S.NOT_STARTED, S.RUNNING) == (h.status("m"), h.status("w"), h.run_status())
    g = h.send(Granted(id="grant:0:0", key="mutex:db", stage=0, generation=0))
    assert ["m", "w"] == sorted(h.refs(g.dispatch))  # m holds the key and runs: w's milestone holds


def test_a_waiting_claim_cancelled_with_a_compensating_run_is_released_at_once() -> None:
    h = Control(
        Stage("pay", "t", compensate="refund"),
        Stage("m", "t", requisites=["pay"], mutex_key="db", mutex_scope="global"),
        Stage("x", "t"),
    )
    rp, rx = h.start().dispatch
    h.done(rp, ok())  # m claims and waits
    t = h.done(rx, TaskResult.terminal("x"))  # the run halts: m is cancelled, pay is compensated first
    assert (S.RUNNING, "running", [h.i("m")]) == (h.run_status(), h.state.record.compensation, t.commit.releases)
