"""Compensation interrupted by a SIGKILL resumes after restart, in reverse order, each effect at least once.

A child process (tests/helpers/compensation_child.py) runs ``a -> b -> c -> d``
on an SQLite file: a, b and c declare ``compensate``, d fails TERMINAL, so the
run compensates c, then b, then a (``<ref>/compensate`` stages, one at a time)
and ends TERMINAL. One call of the saga arms a fault point to SIGKILL the
process at its next hit: d's (the kill lands in the turn that halts the run and
begins the compensations) or a compensation's (the kill lands in the turn of
its result, which starts the next one). The test reads what the dead process
left committed (a read-only connection), which must be the state just before
that turn or just after it, never a mix; a second child restarts on the same
file and must end the run TERMINAL with ``compensation == "done"``, every
compensation's effect in the side-effect log in reverse order, none run again
once its result was committed, and a call whose result died with the process
run again with the same idempotency key (at least once, a stable key). The
history is a clean run's: one ``compensation.started``, one
``compensation.completed``.

The cancel variant: c's compensation cancels the run from inside its call and
the process dies in the cancel's turn or right after it; after the restart the
cancel is recorded (``cancel_reason``) and the compensations still all run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import compensation_child
import pytest
from test_crash import final_state, query, read_log

from stabilize_aio import WorkflowStatus
from stabilize_aio.store.decode import decode_record, decode_run
from stabilize_aio.testing import crash_points

S = WorkflowStatus
CHILD = Path(compensation_child.__file__).resolve()
WID = compensation_child.WORKFLOW_ID

#: Each fault point, and whether the victim's turn is committed when the process dies there.
POINTS = {
    "actor.before_commit": False,  # the turn is folded, never queued
    "writer.begin": False,  # its transaction began, no statement ran
    "writer.commit": False,  # every statement ran, COMMIT never sent
    "actor.after_commit": True,  # committed, nothing acted on it (the next call is not dispatched)
    "actor.after_effects": True,  # committed, the next call handed to its pool, not started
}

#: The calls of the run in the order they run (one at a time): a stage's task, then the compensations.
CALLS: list[tuple[str, str]] = [
    ("a", "do"),
    ("b", "do"),
    ("c", "do"),
    ("d", "fail"),
    ("c/compensate", "undo"),
    ("b/compensate", "undo"),
    ("a/compensate", "undo"),
]
#: The side-effect log lines each task writes, in order.
LINES = {"do": ("start", "end"), "fail": ("start", "fail"), "undo": ("start", "undo", "end")}
#: The stages whose call is in flight in turn, from d's on: the calls a kill can interrupt.
IN_FLIGHT = ["d", "c/compensate", "b/compensate", "a/compensate"]
COMPENSATIONS = IN_FLIGHT[1:]

#: A clean run's history (a kill loses uncommitted turns, never adds to it: the restarted run's is the same).
EVENTS: list[tuple[str, str | None]] = [
    ("workflow.started", None),
    *[(kind, ref) for ref in "abc" for kind in ("stage.started", "task.started", "stage.completed")],
    ("stage.started", "d"),
    ("task.started", "d"),
    ("task.failed", "d"),
    ("stage.completed", "d"),
    ("compensation.started", None),
    *[(kind, ref) for ref in COMPENSATIONS for kind in ("stage.started", "task.started", "stage.completed")],
    ("compensation.completed", None),
    ("workflow.completed", None),
]


class Committed(NamedTuple):
    """What the file holds of the run."""

    status: WorkflowStatus
    halting: bool
    compensation: str | None
    queue: tuple[str, ...]  # the compensations still to run after the current one, as ref ids
    ending: WorkflowStatus | None
    cancel_reason: str | None
    stages: dict[str, WorkflowStatus]
    pending: list[tuple[str, str | None]]  # the outbox rows: (kind, the stage whose current run id is the row's)
    events: list[tuple[str, str | None]]


def committed(db: Path) -> Committed:
    ((body,),) = query(db, "SELECT body FROM workflows WHERE id = ?", (WID,))
    record = decode_record(bytes(body))
    rows = [(ref, decode_run(bytes(run))) for ref, run in query(db, "SELECT ref_id, run FROM stages ORDER BY idx")]
    refs = [ref for ref, _ in rows]
    run_of = {run.run_id: ref for ref, run in rows if run.run_id is not None}
    return Committed(
        status=record.status,
        halting=record.halting,
        compensation=record.compensation,
        queue=tuple(refs[i] for i in record.queue),
        ending=record.ending,
        cancel_reason=record.cancel_reason,
        stages={ref: run.status for ref, run in rows},
        pending=sorted((kind, run_of.get(mid)) for kind, mid in query(db, "SELECT kind, id FROM outbox")),
        events=[(kind, stage) for kind, stage in query(db, "SELECT kind, stage FROM events ORDER BY seq")],
    )


def in_flight(k: int, **changes: Any) -> Committed:
    """The committed state while ``IN_FLIGHT[k]``'s call runs: every earlier turn committed, its result not."""
    ref = IN_FLIGHT[k]
    stages = {"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.SUCCEEDED, "d": S.TERMINAL if k else S.RUNNING}
    stages |= dict.fromkeys(COMPENSATIONS, S.NOT_STARTED)
    stages |= dict.fromkeys(COMPENSATIONS[: max(k - 1, 0)], S.SUCCEEDED)
    stages[ref] = S.RUNNING
    state = Committed(
        status=S.RUNNING,
        halting=k > 0,
        compensation="running" if k else None,
        queue=tuple(COMPENSATIONS[k:]) if k else (),
        ending=S.TERMINAL if k else None,
        cancel_reason=None,
        stages=stages,
        pending=[("RunTask", ref)],
        events=EVENTS[: EVENTS.index(("stage.started", ref)) + 1],
    )
    return state._replace(**changes)


def expected_log(victim: str, lost: bool, *, cut: str | None = None) -> list[tuple[str, str, int, int]]:
    """The side-effect log as (kind, stage, attempt, generation): the calls up to the victim's by the first
    process, the victim's again if its result was lost, the rest by the second (``cut``: the victim's last line
    the first process wrote)."""
    out: list[tuple[str, str, int, int]] = []
    v = [ref for ref, _ in CALLS].index(victim)
    for n, (ref, task) in enumerate(CALLS):
        lines = LINES[task]
        if n == v and cut is not None:
            out += [(kind, ref, 1, 0) for kind in lines[: lines.index(cut) + 1]]
        elif n <= v:
            out += [(kind, ref, 1, 0) for kind in lines]
        if (n == v and lost) or n > v:
            out += [(kind, ref, 1, 1) for kind in lines]
    return out


def logged(log: Path) -> list[tuple[str, str, int, int]]:
    """The side-effect log as (kind, stage, attempt, generation), checking each key is its stage's first one."""
    out = []
    for line in read_log(log):
        workflow, ref, task, generation = line.subject.split(":")
        assert (WID, "0", "0") == (workflow, task, generation), line  # one task, generation 0: a stable key
        out.append((line.kind, ref, line.number, line.generation))
    return out


def run_child(db: Path, log: Path, generation: int, *mode: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash_points.ENV}  # the child arms its point itself
    args = [sys.executable, str(CHILD), str(db), str(log), str(generation), *mode]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=90, check=False)


def check_compensated(db: Path, cancel_reason: str | None = None) -> None:
    """The run ended TERMINAL, compensated c, b, a (each once, seeing its stage's outputs), nothing pending."""
    assert [] == query(db, "SELECT kind, id FROM outbox")
    view, history = anyio.run(final_state, db, [WID])[WID]
    assert (S.TERMINAL, "done", cancel_reason) == (view.status, view.compensation, view.cancel_reason)
    assert {
        "a": S.SUCCEEDED,
        "b": S.SUCCEEDED,
        "c": S.SUCCEEDED,
        "d": S.TERMINAL,
        "a/compensate": S.SUCCEEDED,
        "b/compensate": S.SUCCEEDED,
        "c/compensate": S.SUCCEEDED,
    } == {s.ref_id: s.status for s in view.stages}
    assert {c: {"undone": f"{c[0]}-1"} for c in COMPENSATIONS} == {c: view.stage(c).outputs for c in COMPENSATIONS}
    assert EVENTS == [(e.kind, e.stage) for e in history]
    assert ["done"] == [e.message for e in history if e.kind == "compensation.completed"]


def test_every_fault_point_is_covered() -> None:
    assert set(crash_points.names()) == set(POINTS)


@pytest.mark.slow
def test_an_uninterrupted_saga_compensates_in_reverse_order(tmp_path: Path) -> None:
    """The baseline the kills are measured against: one process, every call once, c, b, a undone."""
    db, log = tmp_path / "saga.db", tmp_path / "sidefx.log"
    done = run_child(db, log, 0)
    assert 0 == done.returncode, done.stderr
    assert [(kind, ref, 1, 0) for ref, task in CALLS for kind in LINES[task]] == logged(log)
    check_compensated(db)


@pytest.mark.slow
@pytest.mark.parametrize("victim", IN_FLIGHT[:-1])
@pytest.mark.parametrize(("point", "turn_committed"), POINTS.items())
def test_compensation_killed_in_a_turn_resumes_in_reverse_order_after_restart(
    tmp_path: Path, victim: str, point: str, turn_committed: bool
) -> None:
    db, log = tmp_path / "saga.db", tmp_path / "sidefx.log"
    killed = run_child(db, log, 0, "kill", victim, point)
    assert -signal.SIGKILL == killed.returncode, killed.stderr
    k = IN_FLIGHT.index(victim)
    # it died in the victim's result's turn: the victim's call ended, no later call started
    assert [line for line in expected_log(victim, lost=False) if line[3] == 0] == logged(log)

    at_kill = committed(db)
    assert at_kill in (in_flight(k), in_flight(k + 1)), f"a half-committed turn: {at_kill}"
    assert in_flight(k + 1 if turn_committed else k) == at_kill

    done = run_child(db, log, 1)
    assert 0 == done.returncode, done.stderr
    check_compensated(db)
    # Reverse order, one at a time, each effect present; the victim's call ran again in the restarted process,
    # with the same idempotency key and attempt, only when its result had died with the first one.
    assert expected_log(victim, lost=not turn_committed) == logged(log)
    lines = logged(log)
    assert COMPENSATIONS == list(dict.fromkeys(ref for kind, ref, _, _ in lines if kind == "undo"))
    starts = {ref: [g for kind, r, _, g in lines if (kind, r) == ("start", ref)] for ref, _ in CALLS}
    assert ([0] if turn_committed else [0, 1]) == starts[victim]  # at least once, with the same key


@pytest.mark.slow
@pytest.mark.parametrize(("point", "cancel_committed"), [("actor.before_commit", False), ("actor.after_commit", True)])
def test_a_cancel_while_a_compensation_runs_does_not_stop_the_rest_across_a_restart(
    tmp_path: Path, point: str, cancel_committed: bool
) -> None:
    """c's compensation cancels the run from inside its call; the process dies in the cancel's turn (or just
    after it). After the restart the cancel is recorded, c's compensation runs again (its result was never
    committed), then b's and a's; the run still ends TERMINAL (it was failing), compensation done."""
    db, log = tmp_path / "saga.db", tmp_path / "sidefx.log"
    killed = run_child(db, log, 0, "cancel", point)
    assert -signal.SIGKILL == killed.returncode, killed.stderr
    assert [line for line in expected_log("c/compensate", lost=True, cut="undo") if line[3] == 0] == logged(log)

    reason = compensation_child.CANCEL_REASON
    if cancel_committed:  # recorded on the run, its row consumed; the compensation still in flight, nothing else
        assert in_flight(1, cancel_reason=reason) == committed(db)
    else:  # the cancel's row was committed by cancel(), its turn never was
        assert in_flight(1, pending=[("CancelWorkflow", None), ("RunTask", "c/compensate")]) == committed(db)

    done = run_child(db, log, 1)
    assert 0 == done.returncode, done.stderr
    check_compensated(db, cancel_reason=reason)
    assert expected_log("c/compensate", lost=True, cut="undo") == logged(log)
