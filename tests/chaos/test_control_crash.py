"""An operator's verb killed between its commit and its effect loses nothing (issue 12).

A child process (tests/helpers/control_child.py) brings the run ``a -> b`` to
the moment of a verb, arms a fault point that SIGKILLs it at the verb's own
turn, and calls the verb. The command's row is committed before that turn
(``actor.before_commit``: the turn never commits), or the turn is committed and
nothing acted on it (``actor.after_commit``: no call cancelled, no row
redelivered, nothing dispatched). A second child on the same file must find the
verb applied (a pause: PAUSED until it resumes it; a resume or a restart: the
run goes on by itself) and end the run SUCCEEDED.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import control_child
import pytest

CHILD = Path(control_child.__file__).resolve()
POINTS = ("actor.before_commit", "actor.after_commit")
#: Each verb, and the run's status and epoch once the restarted child's recovery is done (a paused run waits).
VERBS = [("pause", "PAUSED 0"), ("resume", "SUCCEEDED 0"), ("restart", "SUCCEEDED 1")]


def child(db: Path, generation: int, verb: str, point: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(CHILD), str(db), str(generation), verb, *([point] if point else [])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize(("verb", "recovered"), VERBS)
def test_a_verb_killed_between_its_commit_and_its_effect_is_applied_after_restart(
    tmp_path: Path, verb: str, recovered: str, point: str
) -> None:
    db = tmp_path / "ctl.db"
    dead = child(db, 0, verb, point)
    assert -9 == dead.returncode, dead.stderr
    assert "returned" not in dead.stdout  # it died inside the verb's turn, before the verb returned
    again = child(db, 1, verb)
    assert 0 == again.returncode, again.stderr
    lines = again.stdout.splitlines()
    assert f"recovered {recovered}" == lines[0]
    epoch = 1 if verb == "restart" else 0
    assert lines[-1].startswith(f"done {epoch} wf-ctl:a:0:{epoch}")  # a restart reran a as a new generation
