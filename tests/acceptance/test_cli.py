"""The command line's stumbles: demo counts it refuses, a compact demo for many runs, bad --app on worker."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workflows", "0"], "argument --workflows: must be from 1 to 1,000, not 0"),
        (["--workflows", "-1"], "argument --workflows: must be from 1 to 1,000, not -1"),
        (["--workflows=-1"], "argument --workflows: must be from 1 to 1,000, not -1"),
        (["--workflows", "1001"], "argument --workflows: must be from 1 to 1,000, not 1001"),
        (["--workflows", "three"], "argument --workflows: not a whole number: 'three'"),
    ],
    ids=["zero", "minus-one", "minus-one-joined", "above-the-bound", "not-a-number"],
)
def test_demo_refuses_a_count_out_of_range_with_a_usage_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --workflows N` outside 1..1,000 exits 2 with argparse's error naming the bound, and runs nothing."""
    db = tmp_path / "demo.db"
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--db", str(db), *argv])
    err = capsys.readouterr().err
    assert (2, f"stabilize-aio demo: error: {message}", False) == (
        exited.value.code,
        err.strip().splitlines()[-1],
        db.exists(),
    )


@pytest.mark.slow
def test_demo_with_many_runs_prints_counts_not_a_line_per_run(tmp_path: Path) -> None:
    """50 demo runs print one line of counts per refresh and a summary: no run's own line, ~10 lines, exit 0."""
    db = tmp_path / "demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "stabilize_aio", "demo", "--db", str(db), "--workflows", "50"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert (0, "") == (done.returncode, done.stderr)
    lines = done.stdout.splitlines()
    progress = [ln for ln in lines if re.fullmatch(r"\s+\d+\.\ds  .*", ln)]
    elapsed = float(re.fullmatch(r"done in (\d+\.\d+)s", lines[-1]).group(1))  # type: ignore[union-attr]

    async def demo_ids() -> list[str]:
        async with Engine(f"sqlite:///{db}") as engine:
            return [s.workflow_id for s in await engine.list(application="demo", limit=100)]

    ids = anyio.run(demo_ids)
    assert 50 == len(ids)
    assert [] == [wid for wid in ids if wid[:14] in done.stdout]  # no line per run, neither live nor at the end
    assert "SUCCEEDED 50" == progress[-1].split("s  ", 1)[1]
    assert lines[-2].startswith("50 workflows: SUCCEEDED 50; ")
    # A progress line is printed at most once a second (the demo's refresh), and only when the counts changed;
    # each run changes status at most twice, so never more than 2 * 50 + 1 of them. Today's demo printed 900+.
    assert len(progress) <= min(int(elapsed) + 1, 2 * 50 + 1), done.stdout
    assert len(lines) == len(progress) + 4  # the header, a blank line, the summary, "done in"


def _write_app(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


APPS = {
    "not_callable": "setup = 42\n",
    "raises_in_setup": """\
        def setup(engine):
            raise RuntimeError("no config file\\nin /etc/app")
        """,
    "raises_on_import": 'raise KeyError("APP_TOKEN")\n',
    "imports_a_missing_module": "import a_dependency_nobody_installed\n",
}


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (
            "no_such_module_here:setup",
            "--app 'no_such_module_here:setup': no module named 'no_such_module_here' "
            "(searched the current directory and sys.path)",
        ),
        (
            "no_such_package.tasks:setup",
            "--app 'no_such_package.tasks:setup': no module named 'no_such_package' "
            "(searched the current directory and sys.path)",
        ),
        ("not_callable:missing", "--app 'not_callable:missing': module 'not_callable' has no attribute 'missing'"),
        ("not_callable:setup", "--app 'not_callable:setup': 'setup' is not callable (it is of type int)"),
        (
            "raises_in_setup:setup",
            "--app 'raises_in_setup:setup': the setup raised RuntimeError: no config file in /etc/app",
        ),
        (
            "raises_on_import:setup",
            "--app 'raises_on_import:setup': importing 'raises_on_import' raised KeyError: 'APP_TOKEN'",
        ),
        (
            "imports_a_missing_module:setup",
            "--app 'imports_a_missing_module:setup': importing 'imports_a_missing_module' raised "
            "ModuleNotFoundError: No module named 'a_dependency_nobody_installed'",
        ),
        ("just_a_module", "--app takes module:callable (e.g. myapp.tasks:setup), not 'just_a_module'"),
    ],
    ids=[
        "no-module",
        "no-package",
        "no-attribute",
        "not-callable",
        "setup-raises",
        "import-raises",
        "dependency-missing",
        "no-colon",
    ],
)
def test_worker_with_a_bad_app_prints_one_error_line_and_exits_2(app: str, message: str, tmp_path: Path) -> None:
    """A bad `worker --app` is one `error: …` line on stderr naming the problem, no traceback, exit 2, no database."""
    for name, source in APPS.items():
        _write_app(tmp_path, name, source)
    db = tmp_path / "w.db"
    done = subprocess.run(
        [sys.executable, "-m", "stabilize_aio", "worker", "--url", f"sqlite:///{db}", "--app", app],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (2, "", f"error: {message}\n", False) == (done.returncode, done.stdout, done.stderr, db.exists())


def test_worker_with_a_url_it_cannot_use_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    """`worker --url` with an unknown scheme is one `error: …` line on stderr and exit 2, no traceback."""
    _write_app(tmp_path, "fine", "def setup(engine):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "stabilize_aio", "worker", "--url", "mysql://db/app", "--app", "fine:setup"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (2, "", "error: unknown store URL scheme 'mysql' in 'mysql://db/app'\n") == (
        done.returncode,
        done.stdout,
        done.stderr,
    )


@pytest.mark.slow
def test_worker_awaits_an_async_setup_and_runs_its_tasks(tmp_path: Path) -> None:
    """`--app` may name an `async def setup(engine)`: the worker awaits it and runs the tasks it registered."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    log = tmp_path / "ran.log"
    _write_app(
        tmp_path,
        "async_app",
        f"""\
        from stabilize_aio import TaskResult

        async def setup(engine):
            async def hello(stage):
                with open({str(log)!r}, "a") as f:
                    f.write("hello\\n")
                return TaskResult.success(outputs={{"greeting": "hello"}})

            engine.register("hello", hello)
        """,
    )
    workflow = Workflow(application="w", name="h", stages=[Stage("a", "hello")])

    async def submit_pending() -> str:
        engine = Engine(url)

        async def never(stage: StageView) -> TaskResult:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        engine.register("hello", never)
        async with engine:
            run = await engine.submit(workflow)
            await engine.stop(grace=0)
        return run.workflow_id

    workflow_id = anyio.run(submit_pending)
    cmd = [sys.executable, "-m", "stabilize_aio", "worker", "--url", url, "--app", "async_app:setup", "--grace", "5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "worker ready" in proc.stdout.readline()
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text()):  # the worker's task leaves its mark in the file
            assert time.monotonic() < deadline, "the worker never ran the task"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 == proc.returncode, err

    async def final() -> tuple[WorkflowStatus, str]:
        engine = Engine(url)
        engine.register("hello", lambda stage: TaskResult.success())
        async with engine:
            view = await engine.handle(workflow_id).wait(timeout=10)
        return view.status, view.stage("a").outputs["greeting"]

    assert (WorkflowStatus.SUCCEEDED, "hello") == anyio.run(final)
