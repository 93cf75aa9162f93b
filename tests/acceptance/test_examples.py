"""Smoke tests: the README example, the demo CLI and the testing helper work as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stabilize_aio import Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.testing import running_engine

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_prints_10(tmp_path: Path) -> None:
    """The README's first example, run unchanged, prints 10."""
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "readme_example.py").read_text()
    assert example.strip() in readme  # the README shows exactly the file that is run
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "readme_example.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (0, "10\n") == (done.returncode, done.stdout), done.stderr
    assert (tmp_path / "pipeline.db").exists()


def test_demo_cli_runs_and_reports_success(tmp_path: Path) -> None:
    """`python -m stabilize_aio demo` runs its pipeline on SQLite and reports every run SUCCEEDED."""
    done = subprocess.run(
        [sys.executable, "-m", "stabilize_aio", "demo", "--db", str(tmp_path / "demo.db"), "--workflows", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    finals = [line for line in done.stdout.splitlines() if "total=" in line]
    assert 2 == len(finals)
    assert all(": SUCCEEDED " in line for line in finals)


async def test_running_engine_gives_a_started_engine_on_a_temp_file() -> None:
    """running_engine() registers tasks via setup and yields a started engine on a temporary file."""

    async def hello(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs={"greeting": f"hello {stage.context['who']}"})

    async with running_engine(lambda e: e.register("hello", hello)) as engine:
        wf = Workflow(application="t", name="h", stages=[Stage("a", "hello")])
        view = await (await engine.submit(wf, context={"who": "you"})).wait(timeout=10)
    assert (WorkflowStatus.SUCCEEDED, "hello you") == (view.status, view.outputs["greeting"])
