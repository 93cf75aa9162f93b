"""Smoke tests: the examples, the demo CLI and the testing helper work as documented."""

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


def run_example(name: str, cwd: Path) -> list[str]:
    """Run ``examples/<name>`` in ``cwd`` (where it writes its database); returns its printed lines."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    return done.stdout.splitlines()


def test_dynamic_routing_example_prints_stabilizes_results(tmp_path: Path) -> None:
    """stabilize's dynamic-routing example: a self-jump passes at quality 80 after one jump; a checkpointed
    batch resumes from 33, 66 and 99 and succeeds on its fourth run with the last checkpoint in its context."""
    assert [
        "Example 1: Dynamic Routing with jump_to()",
        "[QualityLoop] Attempt #1, quality=65 (threshold=80)",
        "[QualityLoop] Attempt #2, quality=80 (threshold=80)",
        "RESULT: Workflow Status = SUCCEEDED",
        "Quality Loop Stage Final State:",
        "  Status: SUCCEEDED",
        "  Outputs: {'final_quality': 80, 'attempts_needed': 2, 'status': 'PASSED'}",
        "  Jump tracking (self-loops):",
        "    Total jumps: 1",
        "    1. quality_loop -> quality_loop (context: ['attempt', 'previous_quality'])",
        "",
        "Example 2: Stateful Retries with context_update",
        "[Batch] Run #1, starting from 0 items",
        "[Batch] Run #2, starting from 33 items",
        "[Batch] Run #3, starting from 66 items",
        "[Batch] Run #4, starting from 99 items",
        "RESULT: Workflow Status = SUCCEEDED",
        "Batch Stage Final State:",
        "  Status: SUCCEEDED",
        "  Attempts: 4",
        "  Outputs: {'total_processed': 100, 'status': 'complete', 'checkpoint_used': True}",
        "  Context (checkpoint data preserved across retries):",
        "    processed_count: 99",
        "    _batch_attempt: 3",
        "    _checkpoint_saved: True",
        "  [VERIFIED] Checkpoint was used to resume processing!",
    ] == run_example("dynamic_routing_example.py", tmp_path)
    assert (tmp_path / "dynamic_routing.db").exists()


def test_loops_example_prints_iterations_and_the_final_value_after_the_loop(tmp_path: Path) -> None:
    """while n < 3 runs its body 3 times and the stage after the loop sees n = 3; repeat_until polls 3 times."""
    assert [
        "Example 1: while_loop('count', 'n < 3')",
        "[increment] iteration 1: n 0 -> 1",
        "[increment] iteration 2: n 1 -> 2",
        "[increment] iteration 3: n 2 -> 3",
        "RESULT: Workflow Status = SUCCEEDED",
        "  Loop: {'iterations': 3, 'exit': 'condition'}",
        "  Body stage inc: SKIPPED (the fourth ask found n = 3: the body did not run)",
        "  Final n seen after the loop: 3",
        "",
        "Example 2: repeat_until('poll', 'ready')",
        "[check] iteration 1: check #1, ready=False",
        "[check] iteration 2: check #2, ready=False",
        "[check] iteration 3: check #3, ready=True",
        "RESULT: Workflow Status = SUCCEEDED",
        "  Loop: {'iterations': 3, 'exit': 'condition'}",
        "  Checks: 3, ready: True",
    ] == run_example("loops_example.py", tmp_path)
    assert (tmp_path / "loops.db").exists()


def test_or_split_example_takes_one_branch_per_score_and_joins_on_it(tmp_path: Path) -> None:
    """The OR split takes fast at 0.9 and slow at 0.3, prunes the other (SKIPPED); the OR join runs either way."""
    assert [
        "score 0.9: SUCCEEDED: route=SUCCEEDED, fast=SUCCEEDED, slow=SKIPPED, deliver=SUCCEEDED",
        "  delivered via: fast",
        "score 0.3: SUCCEEDED: route=SUCCEEDED, fast=SKIPPED, slow=SUCCEEDED, deliver=SUCCEEDED",
        "  delivered via: slow",
    ] == run_example("or_split_example.py", tmp_path)
    assert (tmp_path / "or_split.db").exists()


def test_review_pipeline_example_quorum_race_loop_child_and_compensation(tmp_path: Path) -> None:
    """Two of three reviewers vote (the third is cancelled) on each draft; the first draft is sent back with
    their notes and the second approved; dana wins the fact-check race and erin's call is cancelled; the
    child run stores the document and publish has its outputs; the second run fails at announce and
    publish's compensation takes its document out of the store again."""
    lines = run_example("review_pipeline.py", tmp_path)
    shared = [
        "  draft 1: alice rejects (add summary), bob rejects (add sources); carol cancelled",
        "  draft 2: alice approves (summary ok), bob approves (sources ok); carol cancelled",
        "  quorum on the last draft (review's outputs, in instance order): alice approves, bob approves, None (carol)",
        "  approved: draft 2 (sections ['body', 'sources', 'summary']) by alice and bob",
        "  drafts until approval: 2 (jumps back with feedback: 1)",
        "  race: dana won the fact check; cancelled: erin (check_archive SKIPPED, pruned=True)",
    ]
    child = "by the child run <run>/publish.0 (SUCCEEDED: format, store; publish's outputs are the child's: True)"
    assert [
        "Run 1: 'Q3 report', announced on newsletter",
        *shared,
        f"  published: doc-q3-report-r2 {child}",
        "  announce: SUCCEEDED (newsletter)",
        "  final status: SUCCEEDED, compensation: None",
        "  store now holds: ['doc-q3-report-r2']",
        "",
        "Run 2 (fails on purpose): 'Outage notes', announced on status-page",
        *shared,
        f"  published: doc-outage-notes-r2 {child}",
        "  announce: TERMINAL (status-page is down)",
        "  final status: TERMINAL, compensation: done",
        "  undone: publish/compensate: removed doc-outage-notes-r2 from the store",
        "  store now holds: ['doc-q3-report-r2']",
    ] == lines
    assert (tmp_path / "review_pipeline.db").exists()


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
