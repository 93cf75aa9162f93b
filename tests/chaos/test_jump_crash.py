"""A jump interrupted by a SIGKILL is all or nothing after restart.

A child process (tests/helpers/jump_child.py) runs ``a -> b -> c`` on an SQLite
file; c returns ``TaskResult.jump_to("a", ...)`` once, and arms a fault point
to SIGKILL the process at its next hit: inside the jump's own turn, the only
turn of the run left to commit. The test then reads what the dead process left
committed (a read-only connection: it can change nothing any more), which must
be the state just before the jump's turn or the state just after it, never a
mix; a second child restarts on the same file with the same tasks and must end
the run SUCCEEDED with exactly one jump.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import jump_child
import pytest
from test_crash import final_state, query, read_log

from stabilize_aio import WorkflowStatus
from stabilize_aio.store.decode import decode_record, decode_run
from stabilize_aio.testing import crash_points

S = WorkflowStatus
CHILD = Path(jump_child.__file__).resolve()
WID = jump_child.WORKFLOW_ID

#: Each fault point, and whether the jump's turn is committed when the process dies there.
POINTS = {
    "actor.before_commit": False,  # the turn is folded, never queued
    "writer.begin": False,  # its transaction began, no statement ran
    "writer.commit": False,  # every statement ran, COMMIT never sent
    "actor.after_commit": True,  # committed, nothing acted on it (a is not dispatched)
    "actor.after_effects": True,  # committed, a handed to its pool, the call not started
}

#: The history up to the jump's turn, and what the jump's turn adds to it.
BEFORE_EVENTS: list[tuple[str, str | None]] = [
    ("workflow.started", None),
    ("stage.started", "a"),
    ("task.started", "a"),
    ("stage.completed", "a"),
    ("stage.started", "b"),
    ("task.started", "b"),
    ("stage.completed", "b"),
    ("stage.started", "c"),
]
JUMP_EVENTS: list[tuple[str, str | None]] = [("task.started", "c"), ("stage.jumped", "c"), ("stage.started", "a")]


class Committed(NamedTuple):
    """What the file holds of the run."""

    status: WorkflowStatus
    jumps: int
    stages: dict[str, tuple[WorkflowStatus, int]]  # ref id -> (status, generation)
    a_context: dict[str, Any]  # a's context update (where the jump's context goes)
    pending: list[tuple[str, str | None]]  # the outbox rows: (kind, the stage whose current run id is the row's)
    events: list[tuple[str, str | None]]


def committed(db: Path) -> Committed:
    ((body,),) = query(db, "SELECT body FROM workflows WHERE id = ?", (WID,))
    record = decode_record(bytes(body))
    runs = {ref: decode_run(bytes(run)) for ref, run in query(db, "SELECT ref_id, run FROM stages ORDER BY idx")}
    run_of = {run.run_id: ref for ref, run in runs.items() if run.run_id is not None}
    return Committed(
        status=record.status,
        jumps=record.jumps,
        stages={ref: (run.status, run.generation) for ref, run in runs.items()},
        a_context=dict(runs["a"].context_update),
        pending=[(kind, run_of.get(mid)) for kind, mid in query(db, "SELECT kind, id FROM outbox ORDER BY id")],
        events=[(kind, stage) for kind, stage in query(db, "SELECT kind, stage FROM events ORDER BY seq")],
    )


#: The jump never happened: c runs (its RunTask row still pending), nothing reset, no jump counted or recorded.
NOT_JUMPED = Committed(
    status=S.RUNNING,
    jumps=0,
    stages={"a": (S.SUCCEEDED, 0), "b": (S.SUCCEEDED, 0), "c": (S.RUNNING, 0)},
    a_context={},
    pending=[("RunTask", "c")],
    events=BEFORE_EVENTS,
)
#: The jump fully happened: a, b and c reset as generation 1, a restarted with the jump's context (its RunTask
#: row pending, c's consumed), one jump counted and recorded.
JUMPED = Committed(
    status=S.RUNNING,
    jumps=1,
    stages={"a": (S.RUNNING, 1), "b": (S.NOT_STARTED, 1), "c": (S.NOT_STARTED, 1)},
    a_context=jump_child.JUMP_CONTEXT,
    pending=[("RunTask", "a")],
    events=BEFORE_EVENTS + JUMP_EVENTS,
)


def run_child(db: Path, log: Path, generation: int, point: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash_points.ENV}  # the child arms its point itself
    args = [sys.executable, str(CHILD), str(db), str(log), str(generation)]
    return subprocess.run(
        [*args, *([point] if point else [])], env=env, capture_output=True, text=True, timeout=90, check=False
    )


def starts(log: Path) -> dict[str, list[int]]:
    """Idempotency key -> the generation of the process that started each call of it, in order."""
    found: dict[str, list[int]] = collections.defaultdict(list)
    for line in read_log(log):
        if line.kind == "start":
            found[line.subject].append(line.generation)
    return dict(found)


def test_every_fault_point_is_covered() -> None:
    assert set(crash_points.names()) == set(POINTS)


@pytest.mark.slow
@pytest.mark.parametrize(("point", "jump_committed"), POINTS.items())
def test_a_jump_killed_in_its_turn_is_all_or_nothing_after_restart(
    tmp_path: Path, point: str, jump_committed: bool
) -> None:
    db, log = tmp_path / "jump.db", tmp_path / "sidefx.log"
    killed = run_child(db, log, 0, point)
    assert -signal.SIGKILL == killed.returncode, killed.stderr
    # it died in the jump's turn: c decided to jump, and no call started after that
    assert [
        ("start", "a:0:0"),
        ("end", "a:0:0"),
        ("start", "b:0:0"),
        ("end", "b:0:0"),
        ("start", "c:0:0"),
        ("jump", "c:0:0"),
    ] == [(line.kind, line.subject.removeprefix(f"{WID}:")) for line in read_log(log)]

    at_kill = committed(db)
    assert at_kill in (NOT_JUMPED, JUMPED), f"a half-committed jump: {at_kill}"
    assert (JUMPED if jump_committed else NOT_JUMPED) == at_kill

    done = run_child(db, log, 1, None)
    assert 0 == done.returncode, done.stderr

    # The run ends SUCCEEDED with one jump: a, b and c as generation 1, c's final outputs set.
    assert [] == query(db, "SELECT kind, id FROM outbox")
    view, history = anyio.run(final_state, db, [WID])[WID]
    assert (S.SUCCEEDED, 1) == (view.status, view.jumps)
    assert {"a": (S.SUCCEEDED, 1), "b": (S.SUCCEEDED, 1), "c": (S.SUCCEEDED, 1)} == {
        s.ref_id: (s.status, s.generation) for s in view.stages
    }
    assert {"done_after_round": 1, "b_saw": 1} == view.stage("c").outputs
    assert {"round": 1} == view.stage("a").outputs
    assert ["c -> a (context: [reason, round])"] == [e.message for e in history if e.kind == "stage.jumped"]
    completed = collections.Counter(e.stage for e in history if e.kind == "stage.completed")
    assert {"a": 2, "b": 2, "c": 1} == completed  # c's generation 0 jumped: it never completed

    # Each call ran once, but c's first when its jump was lost with the process (its result never committed):
    # redelivered, it ran again in the restarted process and jumped there. a's generation 1 ran only there
    # (after_commit: recovery dispatched it from its committed row; the dead process never started it).
    assert {
        f"{WID}:a:0:0": [0],
        f"{WID}:b:0:0": [0],
        f"{WID}:c:0:0": [0] if jump_committed else [0, 1],
        f"{WID}:a:0:1": [1],
        f"{WID}:b:0:1": [1],
        f"{WID}:c:0:1": [1],
    } == starts(log)
