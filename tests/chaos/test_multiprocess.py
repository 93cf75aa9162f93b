"""Many engine processes on one PostgreSQL database: shared work, failover, fencing, rebalance."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
import pytest

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.store.shards import SHARDS, shard_of

HERE = Path(__file__).resolve().parents[1] / "helpers"  # the --app module lives there
pytestmark = pytest.mark.postgres

CHAIN = Workflow(
    application="mp",
    name="chain",
    stages=[Stage("a", "step"), Stage("b", "step", requisites=["a"]), Stage("c", "step", requisites=["b"])],
)
FAN = Workflow(
    application="mp",
    name="fan",
    stages=[
        Stage("root", "step"),
        *(Stage(f"x{i}", "step", requisites=["root"]) for i in range(3)),
        Stage("join", "step", requisites=["x0", "x1", "x2"]),
    ],
)


def start_worker(url: str, log: Path) -> subprocess.Popen[str]:
    """A worker process with short lease times; its stderr goes to a file (a pipe could fill and block it)."""
    cmd = [sys.executable, "-m", "stabilize_aio", "worker", "--url", url, "--app", "mp_app:setup"]
    cmd += ["--grace", "5", "--lease", "3", "--heartbeat", "0.5", "--poll", "1"]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "worker ready" in line, log.read_text()
    return proc


def finish(proc: subprocess.Popen[str]) -> int:
    """Stop a worker if it still runs, wait for it, and close its pipe."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    """Poll a condition on the shared database (other processes make it true), with a deadline."""
    with anyio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - nothing in this process can signal it
            await anyio.sleep(0.05)


@pytest.mark.slow
async def test_three_processes_share_1000_workflows_through_a_kill_and_a_sigterm(
    postgres_url: str, postgres_schema_url: str, tmp_path: Path
) -> None:
    """1,000 workflows over 3 worker processes, one SIGKILLed and one SIGTERMed: all SUCCEED, each stage once."""
    url = postgres_schema_url
    schema = url.rsplit("=", 1)[1]
    workers = [start_worker(url, tmp_path / f"worker{i}.log") for i in range(3)]
    admin = await asyncpg.connect(postgres_url)
    try:

        async def succeeded() -> int:
            return int(await admin.fetchval(f"SELECT count(*) FROM {schema}.workflows WHERE status = 'SUCCEEDED'"))

        client = Engine(url, client=True, poll_interval=1)
        runs = []
        async with client:
            limiter = anyio.CapacityLimiter(100)

            async def submit(i: int) -> None:
                async with limiter:
                    runs.append(await client.submit(CHAIN if i % 2 else FAN, workflow_id=f"wf-{i:04d}"))

            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    tg.start_soon(submit, i)

            def some_done(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return await succeeded() >= n

                return check

            await wait_until(some_done(150), "150 workflows to succeed")
            workers[0].send_signal(signal.SIGKILL)
            await wait_until(some_done(450), "450 workflows to succeed")
            workers[1].send_signal(signal.SIGTERM)
            views = [await run.wait(timeout=120) for run in runs]
        sigterm_code = finish(workers[1])
        stages_completed = await admin.fetch(
            f"SELECT workflow_id, stage, count(*) AS n FROM {schema}.events"
            " WHERE kind = 'stage.completed' GROUP BY workflow_id, stage"
        )
        pending = await admin.fetchval(f"SELECT count(*) FROM {schema}.outbox")
    finally:
        await admin.close()
        for proc in workers:
            finish(proc)
    assert [WorkflowStatus.SUCCEEDED] * 1000 == [v.status for v in views]
    assert 500 * 3 + 500 * 5 == len(stages_completed)
    assert {1} == {row["n"] for row in stages_completed}  # each stage completed exactly once
    assert (0, 0) == (pending, sigterm_code)
    pids = {value for v in views for key, value in v.outputs.items() if key.startswith("pid_")}
    assert {p.pid for p in workers} <= pids  # the work was shared: every process ran some


async def test_a_process_whose_lease_was_taken_over_cannot_commit(postgres_url: str, postgres_schema_url: str) -> None:
    """Fencing: once another owner takes a shard (epoch + 1), this engine's turn for it is refused and not written."""
    release = anyio.Event()
    engine = Engine(postgres_schema_url, lease=30, heartbeat=10)

    @engine.task("gate")
    async def gate(stage: StageView) -> TaskResult:
        await release.wait()
        return TaskResult.success()

    schema = postgres_schema_url.rsplit("=", 1)[1]
    admin = await asyncpg.connect(postgres_url)
    try:
        async with engine:
            run = await engine.submit(Workflow(application="f", name="f", stages=[Stage("a", "gate")]))
            shard = shard_of(run.workflow_id)
            before = await admin.fetchrow(
                f"SELECT status, version FROM {schema}.stages WHERE workflow_id = $1", run.workflow_id
            )
            await admin.execute(
                f"UPDATE {schema}.leases SET owner = 'thief', epoch = epoch + 1 WHERE shard = $1", shard
            )
            release.set()  # the task finishes; its turn must be refused by the fence
            await engine.wait_idle()
            after = await admin.fetchrow(
                f"SELECT status, version FROM {schema}.stages WHERE workflow_id = $1", run.workflow_id
            )
    finally:
        await admin.close()
    assert before is not None
    assert after is not None
    assert ("RUNNING", before["version"]) == (after["status"], after["version"])


async def test_a_joining_engine_takes_half_the_shards(postgres_schema_url: str) -> None:
    """Engines that join rebalance: two engines end up with half of the shards each."""
    first = Engine(postgres_schema_url, lease=3, heartbeat=0.3)
    second = Engine(postgres_schema_url, lease=3, heartbeat=0.3)
    async with first:
        assert SHARDS == len(first.statistics().leases)
        async with second:
            with anyio.fail_after(20):  # the first releases half at a heartbeat, the second claims them at its next
                while (len(first.statistics().leases), len(second.statistics().leases)) != (SHARDS // 2, SHARDS // 2):
                    await second.wait_leases_changed()
            assert not set(first.statistics().leases) & set(second.statistics().leases)
        with anyio.fail_after(20):  # the second stopped and handed its leases back: the first takes them at once
            while len(first.statistics().leases) != SHARDS:
                await first.wait_leases_changed()


@pytest.mark.slow
def test_the_many_processes_example_runs(postgres_schema_url: str, tmp_path: Path) -> None:
    """examples/many_processes: a worker process runs what the pure client submits; the client prints results."""
    example = HERE.parents[1] / "examples" / "many_processes"
    cmd = [sys.executable, "-m", "stabilize_aio", "worker", "--url", postgres_schema_url, "--app", "tasks:setup"]
    with (tmp_path / "worker.log").open("w") as err:
        worker = subprocess.Popen(cmd, cwd=example, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert worker.stdout is not None
        assert "worker ready" in worker.stdout.readline()
        client = subprocess.run(
            [sys.executable, "client.py", postgres_schema_url],
            cwd=example,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        code = finish(worker)
    lines = client.stdout.splitlines()
    assert (0, 0) == (client.returncode, code), client.stderr
    assert 10 == len(lines)
    assert all(" SUCCEEDED [100, 800] by pids " in line for line in lines)


async def test_one_leader_at_a_time_and_the_next_takes_over(postgres_schema_url: str) -> None:
    """Exactly one engine leads (it holds shard 0); when it stops, the other leads and fires the schedules."""
    ran = anyio.Event()

    def setup(engine: Engine) -> None:
        @engine.task("tick")
        async def tick(stage: StageView) -> TaskResult:
            ran.set()
            return TaskResult.success()

    first = Engine(postgres_schema_url, lease=3, heartbeat=0.3, leader_interval=0.05)
    second = Engine(postgres_schema_url, lease=3, heartbeat=0.3, leader_interval=0.05)
    setup(first)
    setup(second)
    stop_first, first_stopped, finished = anyio.Event(), anyio.Event(), anyio.Event()
    both_started = [anyio.Event(), anyio.Event()]

    async def run_first() -> None:  # each engine is entered and left by its own task
        async with first:
            both_started[0].set()
            await stop_first.wait()
        first_stopped.set()

    async def run_second() -> None:
        await both_started[0].wait()  # the first claims everything (shard 0 included) before the second joins
        async with second:
            both_started[1].set()
            await finished.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_first)
        tg.start_soon(run_second)
        await both_started[1].wait()
        with anyio.fail_after(20):
            while len(second.statistics().leases) != SHARDS // 2:
                await second.wait_leases_changed()
        leaders_while_both = (first.statistics().leader, second.statistics().leader)
        stop_first.set()
        await first_stopped.wait()
        with anyio.fail_after(20):
            while not second.statistics().leader:
                await second.wait_leases_changed()
        wf = Workflow(application="s", name="s", stages=[Stage("a", "tick")])
        await second.schedule("handover", wf, cron="* * * * *", first_at=0.0)
        with anyio.fail_after(20):
            await ran.wait()  # the new leader's loop fired the tick
        runs = await second.list(application="s")
        finished.set()
    assert (True, False) == leaders_while_both
    assert ["schedule:handover:0"] == [r.workflow_id for r in runs]
