"""Coordination across processes on PostgreSQL (issue 12): a global mutex and an admission limit.

Two worker processes (``stabilize-aio worker --app family_app:setup``) share one
fresh schema and split the shards; a pure client submits runs whose ids land on
both. Every run's one stage runs ``critical``, which logs its start and end with
the process id and the wall time: the log proves what the database guaranteed.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import anyio
import pytest
from test_subworkflow_processes import two_workers

from stabilize_aio import Engine, Stage, Workflow, WorkflowStatus
from stabilize_aio.store.shards import shard_of

S = WorkflowStatus
RUNS = 12


def spans(log: Path) -> list[tuple[float, float, int, str]]:
    """(start, end, pid, workflow id) of every ``critical`` call in the log, by start."""
    starts: dict[str, tuple[float, int]] = {}
    out: list[tuple[float, float, int, str]] = []
    for line in log.read_text().splitlines():
        kind, wid, pid, at = line.split()[:4] if line.startswith("crit-") else ("", "", "0", "0")
        if kind == "crit-start":
            starts[wid] = (float(at), int(pid))
        elif kind == "crit-end":
            start, who = starts.pop(wid)
            out.append((start, float(at), who, wid))
    assert not starts, f"calls that never ended: {starts}"
    return sorted(out)


def most_at_once(calls: list[tuple[float, float, int, str]]) -> int:
    """The most calls that ran at the same time."""
    edges = sorted([(start, 1) for start, _, _, _ in calls] + [(end, -1) for _, end, _, _ in calls])
    running = peak = 0
    for _, step in edges:  # (an end sorts before a start at the same instant: touching is not overlapping)
        running += step
        peak = max(peak, running)
    return peak


async def submit_everywhere(client: Engine, workflow: Workflow, pair_shards: dict[int, frozenset[int]]) -> list[str]:
    """Submit RUNS runs, half on each worker's shards (ids picked by shard)."""
    owners = list(pair_shards.values())
    ids: list[str] = []
    n = 0
    while len(ids) < RUNS:
        wid = f"co-{n}"
        n += 1
        if shard_of(wid) in owners[len(ids) % 2]:
            ids.append(wid)
    async with anyio.create_task_group() as tg:
        for wid in ids:
            tg.start_soon(functools.partial(client.submit, workflow, workflow_id=wid))
    return ids


@pytest.mark.postgres
async def test_two_global_mutex_holders_in_two_processes_never_overlap(
    postgres_url: str, postgres_schema_url: str, tmp_path: Path
) -> None:
    workflow = Workflow(application="co", name="mutex", stages=[
        Stage("migrate", "critical", mutex_key="db-migrations", mutex_scope="global")])  # fmt: skip
    async with (
        two_workers(postgres_url, postgres_schema_url, tmp_path) as pair,
        Engine(postgres_schema_url, client=True) as client,
    ):
        ids = await submit_everywhere(client, workflow, pair.shards)
        views = [await client.wait(wid, timeout=60) for wid in ids]
        claims = int(await pair.admin.fetchval(f"SELECT count(*) FROM {pair.schema}.claims"))
    calls = spans(pair.family_log)
    assert [S.SUCCEEDED] * RUNS == [v.status for v in views]
    assert sorted(ids) == sorted(wid for _, _, _, wid in calls)  # each ran once
    assert {pair.a.proc.pid, pair.b.proc.pid} == {pid for _, _, pid, _ in calls}  # both processes held it
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(calls):
        assert end <= start, "two holders of the key overlapped"
    assert 0 == claims  # every claim went with its stage


@pytest.mark.postgres
async def test_an_admission_limit_holds_across_processes(
    postgres_url: str, postgres_schema_url: str, tmp_path: Path
) -> None:
    workflow = Workflow(application="co", name="etl", concurrency_key="nightly-etl", max_concurrent=2,
                        stages=[Stage("load", "critical")])  # fmt: skip
    async with (
        two_workers(postgres_url, postgres_schema_url, tmp_path) as pair,
        Engine(postgres_schema_url, client=True) as client,
    ):
        ids = await submit_everywhere(client, workflow, pair.shards)
        views = [await client.wait(wid, timeout=60) for wid in ids]
    calls = spans(pair.family_log)
    assert [S.SUCCEEDED] * RUNS == [v.status for v in views]
    assert {pair.a.proc.pid, pair.b.proc.pid} == {pid for _, _, pid, _ in calls}
    assert 2 == most_at_once(calls)  # never more than two runs of the key at once (and two did run together)
