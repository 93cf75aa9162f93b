"""Crash tests: real child processes on a real SQLite file, killed with a real SIGKILL.

The child (tests/helpers/crash_child.py) appends every side effect of its tasks to a
log file outside the database, so the log tells what ran even when the
database never heard of it. After each kill the test reads the committed state
with a read-only sqlite3 connection: the dead process can no longer change it.
"""

from __future__ import annotations

import collections
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import crash_child
import pytest

from stabilize_aio import (
    Engine,
    Event,
    RetryPolicy,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)
from stabilize_aio.testing import running_engine

CHILD = Path(__file__).resolve().parents[1] / "helpers" / "crash_child.py"
WORKFLOWS = 200
#: The child of generation g is killed once it has written this many log lines.
KILL_AFTER_LINES = (40, 400, 400, 400)


class LogLine(NamedTuple):
    """One line of the side-effect log."""

    kind: str
    subject: str
    number: int
    generation: int
    at: float


def read_log(path: Path) -> list[LogLine]:
    """The side-effect log, in the order it was written."""
    if not path.exists():
        return []
    out = []
    for raw in path.read_text().splitlines():
        kind, subject, number, generation, at = raw.split()
        out.append(LogLine(kind, subject, int(number), int(generation), float(at)))
    return out


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` through a read-only connection (it never writes the file)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


class Child:
    """A crash_child.py process whose output goes to files in the test's directory."""

    def __init__(self, tmp_path: Path, db: Path, log: Path, generation: int, *args: str) -> None:
        self.stdout = tmp_path / f"child-{generation}.out"
        self.stderr = tmp_path / f"child-{generation}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(db), str(log), str(generation), *args], stdout=out, stderr=err
            )

    def output(self) -> str:
        return f"exit {self.proc.returncode}\nstdout:\n{self.stdout.read_text()}\nstderr:\n{self.stderr.read_text()}"

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``condition`` until it holds; fail if the child exits first or the deadline passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the child exited before {what}\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {timeout}s\n{self.output()}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the child and reap it (its flock on the database is gone after this)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def finish(self, timeout: float = 60.0) -> None:
        """Wait for the child to exit by itself, and require exit status 0."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the child did not finish within {timeout}s\n{self.output()}")
        assert 0 == self.proc.returncode, self.output()


async def final_state(db: Path, workflow_ids: list[str]) -> dict[str, tuple[WorkflowView, list[Event]]]:
    """Each run's view and history, read by a fresh engine on the file."""
    async with Engine(f"sqlite:///{db}") as engine:
        return {wid: (await engine.get(wid), await engine.history(wid)) for wid in workflow_ids}


def completions_per_stage(events: list[Event]) -> dict[str | None, int]:
    """How many ``stage.completed`` events each stage has."""
    return dict(collections.Counter(e.stage for e in events if e.kind == "stage.completed"))


def expected_outputs(i: int) -> dict[str, dict[str, int]]:
    """Stage ref id -> outputs of workflow ``i``: (seed + all ancestors' values) * mul + add."""
    plan = crash_child.stage_plan(i)
    requisites = {ref: reqs for ref, _, reqs, _, _ in plan}

    def ancestors(ref: str) -> set[str]:
        found: set[str] = set()
        for r in requisites[ref]:
            found |= {r} | ancestors(r)
        return found

    values: dict[str, int] = {}
    for ref, _, _, mul, add in plan:
        values[ref] = ((i + sum(values[a] for a in ancestors(ref))) * mul + add) % crash_child.MODULUS
    return {ref: {f"v_{ref}": value} for ref, value in values.items()}


def check_all_succeeded_once(db: Path, count: int) -> dict[str, tuple[WorkflowView, list[Event]]]:
    """Assert that runs ``wf-0..count-1`` all succeeded with the right outputs, each stage completed once."""
    assert [] == query(db, "SELECT workflow_id, id FROM outbox")
    ids = [f"wf-{i}" for i in range(count)]
    state = anyio.run(final_state, db, ids)
    assert dict.fromkeys(ids, WorkflowStatus.SUCCEEDED) == {wid: view.status for wid, (view, _) in state.items()}
    for i, wid in enumerate(ids):
        view, events = state[wid]
        assert expected_outputs(i) == {s.ref_id: dict(s.outputs) for s in view.stages}, wid
        assert {s.ref_id: 1 for s in view.stages} == completions_per_stage(events), wid
    return state


def stage_of(key: str) -> tuple[str, str]:
    """(workflow id, stage ref id) of an idempotency key ``<workflow>:<stage>:<task>:<generation>``."""
    workflow_id, ref_id, _, _ = key.split(":")
    return workflow_id, ref_id


@pytest.mark.slow
def test_sigkilled_engines_run_each_stage_once_and_rerun_only_work_in_flight(tmp_path: Path) -> None:
    """200 workflows survive 4 SIGKILLs: all succeed with correct outputs, and only in-flight tasks rerun."""
    db, log = tmp_path / "crash.db", tmp_path / "sidefx.log"
    committed_at_kill: list[set[tuple[str, str]]] = []
    succeeded_at_kill: list[int] = []
    for generation, lines_needed in enumerate(KILL_AFTER_LINES):
        child = Child(tmp_path, db, log, generation, "dag", str(WORKFLOWS))

        def progressed(generation: int = generation, lines_needed: int = lines_needed) -> bool:
            mine = [line for line in read_log(log) if line.generation == generation]
            started = {line.subject for line in mine if line.kind == "start"}
            ended = {line.subject for line in mine if line.kind == "end"}
            return len(mine) >= lines_needed and bool(started - ended)

        try:
            child.wait_for(progressed, f"{lines_needed} log lines with a task in flight (generation {generation})")
        finally:
            child.kill()
        assert -signal.SIGKILL == child.proc.returncode, child.output()
        committed_at_kill.append(set(query(db, "SELECT workflow_id, ref_id FROM stages WHERE status = 'SUCCEEDED'")))
        succeeded_at_kill.append(query(db, "SELECT COUNT(*) FROM workflows WHERE status = 'SUCCEEDED'")[0][0])

    final_generation = len(KILL_AFTER_LINES)
    Child(tmp_path, db, log, final_generation, "dag", str(WORKFLOWS)).finish()

    # The committed state: every run and stage succeeded, nothing is pending, outputs are right.
    state = check_all_succeeded_once(db, WORKFLOWS)

    # The side-effect log: which process started which task.
    lines = read_log(log)
    runs: dict[str, list[int]] = collections.defaultdict(list)  # key -> generation of each start, in order
    ended: set[tuple[str, int]] = set()
    for line in lines:
        if line.kind == "start":
            runs[line.subject].append(line.generation)
        elif line.kind == "end":
            ended.add((line.subject, line.generation))
    all_stages = {(wid, s.ref_id) for wid, (view, _) in state.items() for s in view.stages}
    assert all_stages == {stage_of(key) for key in runs}
    assert {1} == {line.number for line in lines if line.kind == "start"}  # nothing failed, so no retries

    # A task is never started twice by one process.
    assert {} == {key: gens for key, gens in runs.items() if len(gens) != len(set(gens))}

    # A start is repeated exactly when its process died before the result committed: for a
    # killed generation, "the stage was committed at the kill" <=> "this was the last start".
    # The last start always ran to its `end`, and the final generation's starts are last.
    violations = []
    for key, gens in runs.items():
        for n, generation in enumerate(gens):
            last = n == len(gens) - 1
            committed = generation == final_generation or stage_of(key) in committed_at_kill[generation]
            if committed != last:
                what = "started again after its result committed" if committed else "never rerun although lost"
                violations.append(f"{key}: {what} (starts in generations {gens})")
            if last and (key, generation) not in ended:
                violations.append(f"{key}: its result committed without its last run reaching `end`")
    assert [] == violations

    # Each kill hit live work: tasks in flight (started, result not committed) and unfinished runs.
    in_flight = [
        {key for key, gens in runs.items() if generation in gens and stage_of(key) not in committed_at_kill[generation]}
        for generation in range(final_generation)
    ]
    assert [] == [g for g, keys in enumerate(in_flight) if not keys], in_flight
    assert [] == [g for g, count in enumerate(succeeded_at_kill) if count >= WORKFLOWS], succeeded_at_kill
    reruns = sum(len(gens) - 1 for gens in runs.values())
    assert sum(len(keys) for keys in in_flight) == reruns


@pytest.mark.slow
def test_retry_waiting_in_backoff_survives_sigkill_and_runs_once_after_its_deliver_at(tmp_path: Path) -> None:
    """A retry waiting in backoff at a SIGKILL runs once, as attempt 2, after its deliver_at, holding no slot."""
    db, log = tmp_path / "retry.db", tmp_path / "sidefx.log"
    key = "wf-retry:only:0:0"

    def outbox() -> list[tuple[Any, ...]]:
        return query(db, "SELECT kind, task_type, deliver_at FROM outbox WHERE workflow_id = 'wf-retry'")

    def retry_waiting() -> bool:
        failed = any(line.kind == "fail" and line.subject == key for line in read_log(log))
        if not failed:
            return False
        now = time.time()
        return [("RunTask", "flaky")] == [(k, t) for k, t, at in outbox() if at is not None and at > now]

    first = Child(tmp_path, db, log, 0, "retry")
    try:
        first.wait_for(retry_waiting, "attempt 1 failed and its retry row committed")
    finally:
        first.kill()
    killed_at = time.time()
    assert -signal.SIGKILL == first.proc.returncode, first.output()
    ((kind, task_type, deliver_at),) = outbox()
    assert ("RunTask", "flaky") == (kind, task_type)
    (failed_at,) = [line.at for line in read_log(log) if line.kind == "fail"]
    assert failed_at + crash_child.RETRY_BACKOFF <= deliver_at
    assert killed_at < deliver_at  # killed while the retry waited

    Child(tmp_path, db, log, 1, "retry").finish()

    lines = read_log(log)
    assert [(1, 0), (2, 1)] == [
        (line.number, line.generation) for line in lines if line.kind == "start" and line.subject == key
    ]
    (retry_started_at,) = [line.at for line in lines if line.kind == "start" and line.number == 2]
    assert deliver_at <= retry_started_at
    # While the retry waited, the concurrency-1 pool was idle and ran another workflow to the end.
    assert [0, 0] == [line.number for line in lines if line.kind == "pool-active"]
    assert [1] == [line.number for line in lines if line.kind == "timers-pending"]
    before_deliver_at = [line.kind for line in lines if line.generation == 1 and line.at < deliver_at]
    assert ["pool-active", "timers-pending", "start", "end", "done", "pool-active"] == before_deliver_at
    assert [("wf-other", 1), ("wf-retry", 1)] == [(line.subject, line.number) for line in lines if line.kind == "done"]

    state = anyio.run(final_state, db, ["wf-retry", "wf-other"])
    retry_view, retry_events = state["wf-retry"]
    assert WorkflowStatus.SUCCEEDED == retry_view.status
    assert (2, {"attempt_seen": 2}) == (retry_view.stage("only").attempt, dict(retry_view.stage("only").outputs))
    assert {"only": 1} == completions_per_stage(retry_events)
    assert WorkflowStatus.SUCCEEDED == state["wf-other"][0].status


async def test_timed_out_attempt_finishes_its_finally_before_the_next_attempt_starts(tmp_path: Path) -> None:
    """A call cancelled by its timeout runs its finally block to the end before the retry starts."""
    order: list[str] = []

    def setup(engine: Engine) -> None:
        @engine.task("hang", timeout=0.2, retry=RetryPolicy(max_attempts=2, initial=0.0, jitter=0.0))
        async def hang(stage: StageView) -> TaskResult:
            order.append(f"start-{stage.attempt}")
            if stage.attempt == 1:
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(0.05)  # an async cleanup that takes a while
                    order.append("finally-1")
            return TaskResult.success(outputs={"attempt": stage.attempt})

    workflow = Workflow(application="crash", name="timeout", stages=[Stage("only", task="hang")])
    async with running_engine(setup, path=tmp_path / "timeout.db") as engine:
        view = await (await engine.submit(workflow)).wait(timeout=10)
        (pool,) = engine.statistics().pools
    assert ["start-1", "finally-1", "start-2"] == order
    assert (WorkflowStatus.SUCCEEDED, 2) == (view.status, view.stage("only").attempt)
    assert 1 == pool.timed_out


async def test_pool_without_room_runs_every_task_left_waiting_in_the_store(tmp_path: Path) -> None:
    """Tasks a full pool refused (left pending in the store) all run once the pool has room again."""

    def setup(engine: Engine) -> None:
        @engine.task("one_at_a_time", concurrency=1, backlog=0)
        async def one_at_a_time(stage: StageView) -> TaskResult:
            await anyio.sleep(0.01)  # simulated work
            return TaskResult.success()

    count = 20
    workflow = Workflow(application="crash", name="single", stages=[Stage("only", task="one_at_a_time")])
    async with running_engine(setup, path=tmp_path / "no-room.db") as engine:
        runs = [await engine.submit(workflow) for _ in range(count)]
        with anyio.move_on_after(5):  # 20 calls of 10 ms need well under a second
            for run in runs:
                await run.wait()
        statuses = [(await run.get()).status for run in runs]
        await engine.stop(grace=0)
    assert [WorkflowStatus.SUCCEEDED] * count == statuses


async def test_overflowing_pool_never_starts_a_task_twice_in_one_process(tmp_path: Path) -> None:
    """A pool whose backlog overflows and refills from the store starts each task run once."""
    starts: collections.Counter[str] = collections.Counter()

    async def work(stage: StageView) -> TaskResult:
        starts[stage.idempotency_key] += 1
        await anyio.sleep(random.uniform(0, 0.01))  # simulated work
        return TaskResult.success()

    def setup(engine: Engine) -> None:
        engine.register("edge", work)
        engine.register("branch", work, concurrency=4, backlog=2)  # overflows: work waits in the store

    width, count = 8, 100
    workflow = Workflow(
        application="crash",
        name="wide",
        stages=[
            Stage("root", task="edge"),
            *(Stage(f"b{k}", task="branch", requisites=["root"]) for k in range(width)),
            Stage("join", task="edge", requisites=[f"b{k}" for k in range(width)]),
        ],
    )
    async with running_engine(setup, path=tmp_path / "overflow.db") as engine:
        runs = [await engine.submit(workflow) for _ in range(count)]
        with anyio.move_on_after(10):  # a healthy engine needs about 2 s
            for run in runs:
                await run.wait()
        await engine.stop(grace=0)
    assert {} == {key: n for key, n in starts.items() if n > 1}
