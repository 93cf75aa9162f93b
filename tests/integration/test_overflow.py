"""Pools that overflow never strand work: every RunTask left waiting in the store is taken up again (bug 2).

A pool whose bulkhead and backlog are full refuses further work; the rows stay
in the outbox and the pool reads them back when it has room. A refill that ended
on a short page while the pool refused part of what it delivered used to clear
the overflow mark, so no refill ran again and some workflows waited for ever
(SQLite has no safety-net poll; on PostgreSQL it is switched off here).
"""

from __future__ import annotations

import anyio
import pytest

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus

ROUNDS = 50
#: A round that does not finish in this long is stranded (it takes well under a second).
STRANDED = 20.0


@pytest.fixture
def url(backend_url: str) -> str:
    """A fresh database of the parametrized backend."""
    return backend_url


async def short(stage: StageView) -> TaskResult:
    await anyio.sleep(0.005)
    return TaskResult.success()


def wide(width: int, types: tuple[str, ...]) -> Workflow:
    stages = [Stage(f"s{i}", types[i % len(types)]) for i in range(width)]
    return Workflow(application="overflow", name=f"wide{width}", stages=stages)


async def run_rounds(engine: Engine, rounds: int, workflows: int, workflow: Workflow) -> list[int]:
    """Submit ``workflows`` runs at once, wait for all, ``rounds`` times; the number of successes per round."""
    done: list[int] = []
    for _ in range(rounds):
        runs = [await engine.submit(workflow) for _ in range(workflows)]
        with anyio.fail_after(STRANDED):
            views = [await r.wait() for r in runs]
        done.append(sum(v.status is WorkflowStatus.SUCCEEDED for v in views))
    return done


@pytest.mark.slow
@pytest.mark.parametrize("backlog", [1, 2])
async def test_an_overflowing_pool_strands_no_run_in_50_rounds(url: str, backlog: int) -> None:
    """10 workflows x 20 parallel stages on concurrency=3: all 50 rounds finish, nothing is left in the outbox."""
    engine = Engine(url, poll_interval=3600.0)
    engine.register("short", short, concurrency=3, backlog=backlog)
    async with engine:
        done = await run_rounds(engine, ROUNDS // 2, 10, wide(20, ("short",)))
        await engine.wait_idle()
        rejected = engine.statistics().pools[0].rejected
        left = await engine.store.pending_messages()
    assert [10] * (ROUNDS // 2) == done
    assert rejected > 0  # the pool did overflow
    assert [] == left


@pytest.mark.slow
async def test_small_backlogs_across_several_task_types_strand_nothing(url: str) -> None:
    """Three task types with backlogs 0, 1 and 2 overflow together, round after round, and every run finishes."""
    engine = Engine(url, poll_interval=3600.0)
    for name, backlog in (("t0", 0), ("t1", 1), ("t2", 2)):
        engine.register(name, short, concurrency=2, backlog=backlog)
    async with engine:
        done = await run_rounds(engine, ROUNDS // 2, 8, wide(18, ("t0", "t1", "t2")))
        rejected = [p.rejected for p in engine.statistics().pools]
    assert [8] * (ROUNDS // 2) == done
    assert all(r > 0 for r in rejected)
