"""Fault points armed in a child process: SIGKILL at each named point, then a restart finishes every run once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_crash import CHILD, check_all_succeeded_once

from stabilize_aio.testing import crash_points

WORKFLOWS = 12


def run_child(db: Path, log: Path, generation: int, arm: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash_points.ENV}
    if arm is not None:
        env[crash_points.ENV] = arm
    return subprocess.run(
        [sys.executable, str(CHILD), str(db), str(log), str(generation), "dag", str(WORKFLOWS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("point", crash_points.names())
def test_a_sigkill_at_each_fault_point_loses_nothing_and_repeats_no_step(tmp_path: Path, point: str) -> None:
    """Killed at the point's 5th hit (armed by the environment), the next engine finishes every run exactly once."""
    db, log = tmp_path / "points.db", tmp_path / "sidefx.log"
    killed = run_child(db, log, 0, f"{point}=kill@5")
    assert -signal.SIGKILL == killed.returncode, killed.stderr
    done = run_child(db, log, 1, None)
    assert 0 == done.returncode, done.stderr
    check_all_succeeded_once(db, WORKFLOWS)


def test_the_environment_variable_arms_points_in_a_child(tmp_path: Path) -> None:
    """STABILIZE_CRASH_POINTS arms a point at import; a bad value is refused with the variable named."""
    probe = "from stabilize_aio import _faults; print(sorted((n, a.action, a.left) for n, a in _faults.armed.items()))"
    env = {**os.environ, crash_points.ENV: "writer.begin=kill@3, actor.before_commit"}
    ok = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert "[('actor.before_commit', 'raise', 1), ('writer.begin', 'kill', 3)]\n" == ok.stdout
    env[crash_points.ENV] = "writer.begin=explode"
    bad = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert 0 != bad.returncode
    assert crash_points.ENV in bad.stderr
