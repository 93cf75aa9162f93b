"""A multi-instance stage interrupted by a SIGKILL finishes after restart: each instance once, or again if lost.

A child process (tests/helpers/fan_child.py) runs one stage of 200 instances,
20 at a time, on an SQLite file. Instance 50's call arms a fault point to
SIGKILL the process at its next hit, once instances 51 to 55 are in flight
(they hang): the process dies in the run's next turn, before or after its
commit depending on the point. The test reads which instances the dead process
left SUCCEEDED (a read-only connection), restarts the child on the same file,
and checks every instance against the side-effect log, a file outside the
database: a committed instance's effect happened exactly once (before the
kill), every other instance's exactly once after the restart (the lost calls
again, with the same idempotency key), and the stage's outputs list all 200 in
order.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import fan_child
import pytest
from test_crash import final_state, query, read_log

from stabilize_aio import WorkflowStatus
from stabilize_aio.testing import crash_points

S = WorkflowStatus
CHILD = Path(fan_child.__file__).resolve()
WID, STAGE, N = fan_child.WORKFLOW_ID, fan_child.STAGE, fan_child.COUNT


def key(k: int) -> str:
    """Instance k's idempotency key: ``<run>:<ref>:<task index>:<generation>``."""
    return f"{WID}:{STAGE}[{k}]:0:0"


def run_child(db: Path, log: Path, generation: int, point: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash_points.ENV}  # the child arms its point itself
    args = [sys.executable, str(CHILD), str(db), str(log), str(generation), *([point] if point else [])]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)


def instance_statuses(db: Path) -> dict[int, str]:
    """Instance index -> its stage row's status, as the file holds it."""
    rows = query(db, "SELECT ref_id, status FROM stages WHERE workflow_id = ? AND ref_id LIKE ?", (WID, f"{STAGE}[%"))
    return {int(ref[len(STAGE) + 1 : -1]): status for ref, status in rows}


@pytest.mark.slow
@pytest.mark.parametrize("point", crash_points.names())
def test_a_multi_instance_stage_killed_mid_way_finishes_each_instance_after_restart(tmp_path: Path, point: str) -> None:
    db, log = tmp_path / "fan.db", tmp_path / "sidefx.log"
    killed = run_child(db, log, 0, point)
    assert -signal.SIGKILL == killed.returncode, killed.stderr

    at_kill = instance_statuses(db)
    committed = {k for k, status in at_kill.items() if status == "SUCCEEDED"}
    assert N == len(at_kill)  # the instances' rows were made when the stage started
    # instance 50 started only once 31 had ended (20 at a time), so at least 31 results were committed; the held
    # ones never returned; at most 20 calls were running beyond the committed ones
    assert len(committed) >= fan_child.KILLER + 1 - fan_child.MAX_PARALLEL
    assert not committed & fan_child.HELD
    started = {line.number for line in read_log(log)}
    assert committed | fan_child.HELD | {fan_child.KILLER} <= started
    assert len(started) <= len(committed) + fan_child.MAX_PARALLEL

    done = run_child(db, log, 1, None)
    assert 0 == done.returncode, done.stderr

    assert [] == query(db, "SELECT workflow_id, kind FROM outbox")
    view, history = anyio.run(final_state, db, [WID])[WID]
    assert S.SUCCEEDED is view.status
    work = view.stage(STAGE)
    assert [(S.SUCCEEDED, 1)] * N == [(i.status, i.attempt) for i in work.instances]  # a redelivery is no retry
    assert [{"k": k, "key": key(k)} for k in range(N)] == work.outputs["instances"]  # all 200, in order

    effects: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
    for line in read_log(log):
        assert "effect" == line.kind
        effects[line.number].append((line.subject, line.generation))
    assert set(range(N)) == set(effects)  # each instance's effect happened at least once
    for k in range(N):
        # one key per instance, the same before and after the crash
        assert {key(k)} == {subject for subject, _ in effects[k]}, k
        if k in committed:  # its result was committed before the kill: never again
            assert [(key(k), 0)] == effects[k], k
        else:  # lost with the process (in flight) or never started: exactly once after the restart
            assert 1 == [g for _, g in effects[k]].count(1), (k, effects[k])
    rerun = {k for k in range(N) if [g for _, g in effects[k]] == [0, 1]}
    assert fan_child.HELD <= rerun  # the calls in flight at the kill ran again, with the same key
    assert not rerun & committed

    completed = collections.Counter(e.stage for e in history if e.kind == "stage.completed")
    assert {STAGE: 1} == {s: n for s, n in completed.items() if s == STAGE}
    assert all(n == 1 for n in completed.values()), completed
