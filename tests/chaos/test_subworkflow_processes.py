"""Sub-workflows across processes: a child on another process's shard (PostgreSQL), and SIGKILLs between runs.

On PostgreSQL two worker processes (``stabilize-aio worker --app
family_app:setup``) share one fresh schema, 16 shards each. The test reads who
leases which shard from the ``leases`` table (an owner id is
``host:pid:token``) and picks a parent id whose shard process A owns while its
child's (``<parent>/enrich.0``) is process B's, so everything between the two
runs goes through the database: A starts the child (not owned: B is woken), B
runs it and tells A its parent, or A's cancel of the parent cancels the child
in B.

On SQLite a child process (tests/helpers/family_app.py) is SIGKILLed by a
fault point between the two runs' turns: after the parent's turn that owes the
child's start, after the child's first turn (started, the parent not yet
acknowledged), after the child's last turn (ended, its parent not yet told).
What the dead process left is read with a read-only connection; a restarted
child must end the parent SUCCEEDED with one child.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import anyio
import asyncpg
import family_app
import pytest
from test_crash import final_state, query, read_log
from test_multiprocess import finish as stop_worker

from stabilize_aio import Engine, WorkflowStatus
from stabilize_aio.store.shards import SHARDS, shard_of
from stabilize_aio.testing import crash_points

S = WorkflowStatus
HERE = Path(family_app.__file__).resolve().parent  # the --app module lives there
CHILD = Path(family_app.__file__).resolve()


# PostgreSQL: two worker processes ------------------------------------------------------------------------------
class Worker(NamedTuple):
    proc: subprocess.Popen[str]
    log: Path


def start_worker(url: str, log: Path, family_log: Path) -> Worker:
    """A worker process of family_app with short lease times; its stderr goes to a file (a pipe could fill)."""
    cmd = [sys.executable, "-m", "stabilize_aio", "worker", "--url", url, "--app", "family_app:setup"]
    cmd += ["--grace", "5", "--lease", "5", "--heartbeat", "0.5", "--poll", "1"]
    env = {**os.environ, family_app.LOG_ENV: str(family_log)}
    env.pop(crash_points.ENV, None)
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "worker ready" in line, log.read_text()
    return Worker(proc, log)


def finish(worker: Worker) -> int:
    """SIGTERM a worker if it still runs (a graceful stop), wait for it, and close its pipe."""
    return stop_worker(worker.proc)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll a condition other processes make true (nothing in this one can signal it), with a deadline."""
    try:
        with anyio.fail_after(timeout):
            while not await check():  # noqa: ASYNC110 - the condition lives in other processes
                await anyio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"no {what} within {timeout}s")


class Pair(NamedTuple):
    """Two worker processes on one schema, and the shards each leases once they have split them."""

    a: Worker
    b: Worker
    shards: dict[int, frozenset[int]]  # pid -> its shards
    admin: asyncpg.Connection
    schema: str
    family_log: Path


@asynccontextmanager
async def two_workers(postgres_url: str, url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    """Start two workers on ``url`` and wait until each leases half of the shards; stop both gracefully after."""
    schema = url.rsplit("=", 1)[1]
    family_log = tmp_path / "family.log"
    family_log.touch()
    workers: list[Worker] = []
    admin = await asyncpg.connect(postgres_url)
    try:
        workers += [start_worker(url, tmp_path / f"worker{i}.log", family_log) for i in range(2)]
        pids = [w.proc.pid for w in workers]
        shards: dict[int, frozenset[int]] = {}

        async def split() -> bool:
            rows = await admin.fetch(f"SELECT shard, owner FROM {schema}.leases WHERE owner IS NOT NULL")
            held = collections.defaultdict(set)
            for row in rows:
                held[int(row["owner"].split(":")[1])].add(row["shard"])
            shards.clear()
            shards.update({pid: frozenset(held[pid]) for pid in pids})
            return [SHARDS // 2] * 2 == [len(held[pid]) for pid in pids] and len(held) == 2

        await wait_until(split, "even split of the shards between the two workers")
        yield Pair(workers[0], workers[1], dict(shards), admin, schema, family_log)
        codes = [finish(w) for w in workers]
        assert [0, 0] == codes, "\n".join(w.log.read_text() for w in workers)
    finally:
        for w in workers:
            finish(w)
        await admin.close()


async def drained(pair: Pair) -> None:
    """Wait until nothing is owed any more: the runs have ended, but what one owes the other (the child's news,
    the parent's cancel) is acknowledged by a turn of its own after that, in whichever process owns it."""

    async def empty() -> bool:
        return 0 == int(await pair.admin.fetchval(f"SELECT count(*) FROM {pair.schema}.outbox"))

    await wait_until(empty, "empty outbox")


def split_family(a: frozenset[int], b: frozenset[int]) -> str:
    """A parent id whose shard is in ``a`` while its sub-workflow stage's child's shard is in ``b``."""
    for i in range(10_000):
        parent = f"family-{i}"
        if shard_of(parent) in a and shard_of(f"{parent}/{family_app.SUB}.0") in b:
            return parent
    raise AssertionError("no parent id splits that way")  # pragma: no cover - 1 in 4 ids do


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_child_on_another_processes_shard_runs_there_and_its_parent_ends_with_its_outputs(
    postgres_url: str, postgres_schema_url: str, tmp_path: Path
) -> None:
    async with two_workers(postgres_url, postgres_schema_url, tmp_path) as pair:
        pid_a, pid_b = pair.a.proc.pid, pair.b.proc.pid
        parent = split_family(pair.shards[pid_a], pair.shards[pid_b])
        child_id = f"{parent}/{family_app.SUB}.0"
        async with Engine(postgres_schema_url, client=True, poll_interval=1) as client:
            run = await client.submit(family_app.enrich_parent(), workflow_id=parent)
            view = await run.wait(timeout=60)
            kid = await client.get(child_id)
        children = await pair.admin.fetch(f"SELECT id FROM {pair.schema}.workflows WHERE id <> $1 ORDER BY id", parent)
        await drained(pair)
    assert (S.SUCCEEDED, S.SUCCEEDED) == (view.status, kid.status)
    assert 7 == kid.inputs["customer"]  # the stage's context, carried to B through the child's row
    assert {"pid_score": pid_b, "score": 14} == kid.stage("score").outputs  # the child's task ran in B
    assert {"pid_score": pid_b, "score": 14} == view.stage(family_app.SUB).outputs  # the stage ends with them
    assert (pid_a, pid_a) == (view.stage("prep").outputs["pid_prep"], view.stage("report").outputs["pid_report"])
    assert [child_id] == [row["id"] for row in children]  # one child, started once


@pytest.mark.postgres
@pytest.mark.slow
async def test_cancelling_the_parent_cancels_its_hanging_child_in_the_other_process(
    postgres_url: str, postgres_schema_url: str, tmp_path: Path
) -> None:
    async with two_workers(postgres_url, postgres_schema_url, tmp_path) as pair:
        pid_a, pid_b = pair.a.proc.pid, pair.b.proc.pid
        parent = split_family(pair.shards[pid_a], pair.shards[pid_b])
        child_id = f"{parent}/{family_app.SUB}.0"

        def logged(line: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return line in pair.family_log.read_text().splitlines()

            return check

        async with Engine(postgres_schema_url, client=True, poll_interval=1) as client:
            run = await client.submit(family_app.hang_parent(), workflow_id=parent)
            await wait_until(logged(f"hang-start {child_id} {pid_b}"), "hang task of the child running in B")
            view = await client.cancel(parent, reason="stop the family")
            with anyio.fail_after(30):
                kid = await client.wait(child_id)
            await wait_until(logged(f"hang-cancelled {child_id} {pid_b}"), "the child's coroutine cancelled in B")
            after = await run.wait(timeout=5)
        await drained(pair)
    assert (S.CANCELED, S.CANCELED) == (view.status, after.status)
    assert S.CANCELED is kid.status
    assert kid.stage("wait").status is S.CANCELED
    assert [f"hang-start {child_id} {pid_b}", f"hang-cancelled {child_id} {pid_b}"] == (
        pair.family_log.read_text().splitlines()
    )  # the one call ran in B only, and its coroutine was cancelled there


# SQLite: SIGKILLs between the two runs' turns ------------------------------------------------------------------
WID, KID = family_app.WORKFLOW_ID, family_app.CHILD_ID
PREP_KEY, SCORE_KEY = f"{WID}:prep:0:0", f"{KID}:score:0:0"  # <run>:<ref>:<task index>:<generation>


class AtKill(NamedTuple):
    """What the file holds when the process has died."""

    workflows: dict[str, str]  # id -> status
    parent_stages: dict[str, str]  # ref id -> status
    outbox: list[tuple[str, str]]  # (workflow id, kind)


def at_kill(db: Path) -> AtKill:
    return AtKill(
        workflows=dict(query(db, "SELECT id, status FROM workflows ORDER BY id")),
        parent_stages=dict(query(db, "SELECT ref_id, status FROM stages WHERE workflow_id = ? ORDER BY idx", (WID,))),
        outbox=[
            (wid, kind) for wid, kind in query(db, "SELECT workflow_id, kind FROM outbox ORDER BY workflow_id, kind")
        ],
    )


WAITING = {"prep": "SUCCEEDED", "enrich": "RUNNING"}
#: Each case: what the dead process may have left, and which generation ran the child's task.
CASES: dict[str, tuple[list[AtKill], int]] = {
    # prep's result turn committed: enrich RUNNING, the child's start owed (a Send row); no child yet
    "parent-start": ([AtKill({WID: "RUNNING"}, WAITING, [(WID, "Send")])], 1),
    # the child's first turn committed (its task owed); the parent's Send row not yet acknowledged
    "child-begun": ([AtKill({WID: "RUNNING", KID: "RUNNING"}, WAITING, [(WID, "Send"), (KID, "RunTask")])], 1),
    # the child's last turn committed: it SUCCEEDED and owes its parent the news; the parent still waits. The
    # parent's own Send row (the start) is gone or still pending: the child's task races the parent's re-check
    # after the start and its Sent turn
    "child-last": (
        [
            AtKill({WID: "RUNNING", KID: "SUCCEEDED"}, WAITING, [(KID, "Send")]),
            AtKill({WID: "RUNNING", KID: "SUCCEEDED"}, WAITING, [(WID, "Send"), (KID, "Send")]),
        ],
        0,
    ),
}


def run_child(db: Path, log: Path, generation: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != crash_points.ENV}  # the child arms its point itself
    return subprocess.run(
        [sys.executable, str(CHILD), str(db), str(log), str(generation), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("point", ["actor.after_commit", "actor.after_effects"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_kill_between_parent_and_child_turns_leaves_one_child_and_the_parent_succeeds(
    tmp_path: Path, case: str, point: str
) -> None:
    db, log = tmp_path / "family.db", tmp_path / "sidefx.log"
    left, child_generation = CASES[case]
    killed = run_child(db, log, 0, case, point)
    assert -signal.SIGKILL == killed.returncode, killed.stderr
    state = at_kill(db)
    assert state in left, state

    done = run_child(db, log, 1)
    assert 0 == done.returncode, done.stderr

    assert [] == query(db, "SELECT workflow_id, kind FROM outbox")
    assert [WID, KID] == [wid for (wid,) in query(db, "SELECT id FROM workflows ORDER BY id")]  # one child
    states = anyio.run(final_state, db, [WID, KID])
    (parent, parent_history), (kid, kid_history) = states[WID], states[KID]
    assert (S.SUCCEEDED, S.SUCCEEDED) == (parent.status, kid.status)
    assert {"score": 14, "by": child_generation} == kid.stage("score").outputs
    assert {"score": 14, "by": child_generation} == parent.stage(family_app.SUB).outputs
    assert 1 == sum(e.kind == "workflow.started" for e in kid_history)
    completed = collections.Counter(e.stage for e in parent_history if e.kind == "stage.completed")
    assert {"prep": 1, family_app.SUB: 1} == completed
    # every call ran once: prep's result and, before child-last's kill, score's were committed; a child
    # started before the kill ran its task only after the restart (its first turn's row was pending)
    starts = [(line.subject, line.generation) for line in read_log(log) if line.kind == "start"]
    assert [(PREP_KEY, 0), (SCORE_KEY, child_generation)] == starts
