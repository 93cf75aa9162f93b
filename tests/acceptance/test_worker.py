"""The worker entry point: a real process, SIGTERM mapped to a graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus

HERE = Path(__file__).resolve().parents[1] / "helpers"  # the --app module lives there


async def _submit_pending(url: str) -> tuple[str, str]:
    """Submit one `quick` and one `hang` run, then stop at once: both stay pending for the worker."""
    engine = Engine(url)
    gate = anyio.Event()

    async def blocked(stage: StageView) -> TaskResult:
        await gate.wait()  # never set: nothing completes in this engine
        raise AssertionError("unreachable")

    engine.register("quick", blocked)
    engine.register("hang", blocked)
    async with engine:
        quick = await engine.submit(Workflow(application="w", name="q", stages=[Stage("a", "quick")]))
        hang = await engine.submit(Workflow(application="w", name="h", stages=[Stage("a", "hang")]))
        await engine.stop(grace=0)
    return quick.workflow_id, hang.workflow_id


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll a condition another process makes true (its side-effect log), with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_drains_running_tasks_within_grace_and_leaves_the_rest(tmp_path: Path) -> None:
    """On SIGTERM the worker lets a short task finish, cuts a hung one after the grace, and exits 0."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    log = tmp_path / "side-effects.log"
    log.touch()
    quick_id, hang_id = anyio.run(_submit_pending, url)
    env = {**os.environ, "WORKER_TEST_LOG": str(log)}
    cmd = [sys.executable, "-m", "stabilize_aio", "worker", "--url", url, "--app", "worker_app:setup", "--grace", "1"]
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "worker ready" in proc.stdout.readline()
        _wait_for(
            lambda: {"start quick", "start hang"} <= {ln.rsplit(" ", 1)[0] for ln in log.read_text().splitlines()},
            "both tasks to start",
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 == proc.returncode, err
    assert "SIGTERM: stopping" in out
    assert "end quick" in log.read_text()

    async def finish_in_a_new_engine() -> tuple[WorkflowStatus, WorkflowStatus, int, int]:
        engine = Engine(url)

        async def done(stage: StageView) -> TaskResult:
            return TaskResult.success(outputs={"ran_in": os.getpid()})

        engine.register("quick", done)
        engine.register("hang", done)
        async with engine:
            quick = await engine.get(quick_id)  # as the worker left it
            hang = await engine.handle(hang_id).wait(timeout=10)
        return quick.status, hang.status, quick.stage("a").outputs["ran_in"], hang.stage("a").outputs["ran_in"]

    quick_status, hang_status, quick_pid, hang_pid = anyio.run(finish_in_a_new_engine)
    assert (WorkflowStatus.SUCCEEDED, WorkflowStatus.SUCCEEDED) == (quick_status, hang_status)
    assert (proc.pid, os.getpid()) == (quick_pid, hang_pid)  # quick finished in the worker, hang re-ran here
