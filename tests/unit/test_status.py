"""The status table, its one writer, and the flags reproduced from stabilize."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from stabilize_aio import InvalidTransitionError, StabilizeError, WorkflowStatus
from stabilize_aio.model.records import StageRun, StageSpec, WorkflowRecord, set_stage_status, set_workflow_status
from stabilize_aio.model.status import VALID_TRANSITIONS, allowed, transition

S = WorkflowStatus
PACKAGE = Path(__file__).resolve().parents[2] / "stabilize_aio"

# stabilize 0.33.1's table, written out independently of the module under test.
EXPECTED_FORWARD = {
    "NOT_STARTED": {"RUNNING", "CANCELED", "SKIPPED", "BUFFERED", "TERMINAL"},
    "BUFFERED": {"NOT_STARTED", "RUNNING", "CANCELED", "SKIPPED"},
    "RUNNING": {
        "SUCCEEDED",
        "FAILED_CONTINUE",
        "TERMINAL",
        "CANCELED",
        "PAUSED",
        "STOPPED",
        "SUSPENDED",
        "REDIRECT",
        "SKIPPED",
    },
    "PAUSED": {"RUNNING", "CANCELED", "STOPPED"},
    "SUSPENDED": {"RUNNING", "CANCELED", "STOPPED"},
    "REDIRECT": {"RUNNING", "SUCCEEDED", "CANCELED"},
    "SUCCEEDED": set(),
    "FAILED_CONTINUE": set(),
    "TERMINAL": set(),
    "CANCELED": set(),
    "STOPPED": set(),
    "SKIPPED": set(),
}


def test_there_are_twelve_statuses() -> None:
    """The 12 statuses of stabilize exist, with their names as values."""
    assert set(EXPECTED_FORWARD) == {s.value for s in S}
    assert len(list(S)) == 12


@pytest.mark.parametrize(("current", "target"), list(itertools.product(list(S), list(S))))
def test_every_pair_against_the_table(current: WorkflowStatus, target: WorkflowStatus) -> None:
    """Each (status, target) pair is allowed exactly when the table (or identity) says so."""
    expected = current is target or target.value in EXPECTED_FORWARD[current.value]
    assert expected == allowed(current, target)
    if expected:
        assert target == transition(current, target, what="x")
    else:
        with pytest.raises(InvalidTransitionError, match=f"{current} -> {target}"):
            transition(current, target, what="x")


@pytest.mark.parametrize(("current", "target"), list(itertools.product(list(S), list(S))))
def test_reset_edges_only_lead_back_to_not_started(current: WorkflowStatus, target: WorkflowStatus) -> None:
    """With reset=True (restart, jump), any status may go back to NOT_STARTED and nowhere else."""
    expected = current is target or target is S.NOT_STARTED
    assert expected == allowed(current, target, reset=True)


def test_flags_match_stabilize() -> None:
    """complete / halt / continuable / active flags are stabilize's."""
    assert {S.SUCCEEDED, S.FAILED_CONTINUE, S.TERMINAL, S.CANCELED, S.STOPPED, S.SKIPPED} == {
        s for s in S if s.is_complete
    }
    assert {S.TERMINAL, S.CANCELED, S.STOPPED} == {s for s in S if s.is_halt}
    assert {S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED, S.REDIRECT} == {s for s in S if s.can_continue}
    assert {S.NOT_STARTED, S.RUNNING, S.PAUSED, S.SUSPENDED} == {s for s in S if s.is_active}


def test_table_has_every_status_as_a_source() -> None:
    """The table names every status as a source."""
    assert set(S) == set(VALID_TRANSITIONS)


def test_record_writers_refuse_illegal_changes() -> None:
    """The record helpers go through the table: a finished stage or workflow cannot be revived."""
    spec = StageSpec(ref_id="a", index=0, name="a", tasks=("t",), context={}, requisites=())
    done = StageRun(status=S.SUCCEEDED)
    with pytest.raises(InvalidTransitionError, match="stage 'a'"):
        set_stage_status(spec, done, S.RUNNING)
    assert S.NOT_STARTED == set_stage_status(spec, done, S.NOT_STARTED, reset=True).status
    record = WorkflowRecord(id="w", application="a", name="n", status=S.CANCELED)
    with pytest.raises(InvalidTransitionError, match="workflow 'w'"):
        set_workflow_status(record, S.RUNNING)


def _status_assignments(path: Path) -> list[int]:
    """Lines in ``path`` that build a record with an explicit ``status=`` through replace()."""
    tree = ast.parse(path.read_text())
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "replace" and any(kw.arg == "status" for kw in node.keywords):
                lines.append(node.lineno)
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    lines.append(node.lineno)
    return lines


def test_only_the_records_module_writes_statuses() -> None:
    """No module but model/records.py rebuilds a record with a new status (all go through transition())."""
    records = PACKAGE / "model" / "records.py"
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if path != records and (lines := _status_assignments(path))
    }
    assert {} == offenders
    state_lines = _status_assignments(records)
    assert 2 == len(state_lines)  # set_stage_status and set_workflow_status, both after transition()


def test_an_illegal_change_is_a_stabilize_error() -> None:
    """InvalidTransitionError is under StabilizeError (and still a ValueError), naming both statuses."""
    with pytest.raises(StabilizeError, match="SUCCEEDED -> RUNNING") as caught:
        transition(S.SUCCEEDED, S.RUNNING, what="stage 'a'")
    error = caught.value
    assert isinstance(error, InvalidTransitionError)
    assert isinstance(error, ValueError)
    assert (S.SUCCEEDED, S.RUNNING) == (error.current, error.target)
