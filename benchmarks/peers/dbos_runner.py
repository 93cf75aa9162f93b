"""Peer runner: the benchmark workloads on DBOS Transact 3.4.0 (durable execution on SQLite).

Usage (with an interpreter that has ``dbos==3.4.0``; see ``setup.sh`` beside this file)::

    python benchmarks/peers/dbos_runner.py --workload W1 --size 500 --cap 120 --workdir /tmp/bench

Prints exactly one JSON line on stdout (everything else, DBOS's own logging included, goes to
stderr). Does not import stabilize_aio.

How each workload is written, in DBOS's own API (docs.dbos.dev, Python: workflows, steps,
``DBOS.start_workflow_async``): ``async def`` functions decorated with ``@DBOS.step()``, called from
an ``async def`` function decorated with ``@DBOS.workflow()``. A stage of the benchmark is one step.
Parallel stages are steps awaited together with ``asyncio.gather`` inside the workflow, which DBOS
supports for async steps since dbos-transact-py PR #559 (each step still gets its own checkpoint).

* W1 overhead: ``size`` workflows of three no-op steps awaited one after the other, all started up
  front with ``DBOS.start_workflow_async``.
* W2 I/O pipeline: ``size`` workflows ``a; gather(b1..b8); c``, every step ``await
  asyncio.sleep(0.05)`` (plain asyncio I/O, not ``DBOS.sleep``, which is a durable timer).
* How W1 and W2 start their workflows (``--submit``), as stabilize_aio's runner submits them:
  ``sequential`` (the default) awaits each ``DBOS.start_workflow_async`` before the next, then
  awaits every handle's result together; ``concurrent`` gathers one coroutine per workflow, each
  starting its workflow (at most 1,000 starts in flight) and then awaiting its handle's result.
* W3 wide fan-out: one workflow ``root; gather(size steps of asyncio.sleep(0.1)); join``.
* W5 latency: ``size`` workflows of two no-op steps, started one at a time, each after the previous
  one's result: submit (the ``start_workflow_async`` call) -> first step's body starts, and first
  step's body returns -> second step's body starts.

Settings, and why they are fair:

* SQLite file, WAL: DBOS does not set a journal mode, so the runner creates the file in WAL mode
  (persistent) before ``DBOS.launch()`` and a SQLAlchemy ``connect`` listener re-asserts WAL and sets
  ``synchronous`` on every connection: FULL by default (``--synchronous``), which is SQLite's and
  DBOS's default and stabilize_aio's.
* Everything else is DBOS's default: a system-database pool of 20 connections, DBOS's unbounded
  executor for the blocking database calls (``asyncio.to_thread``), no queue. Workflows are started
  directly (not enqueued), so they start at once with no polling, and DBOS places no limit on how many
  steps run at once (it has no per-step concurrency limit; queues limit whole workflows and poll once
  a second by default). This is the fastest idiomatic way to run these workloads on DBOS.
* Measurement: wall time starts after ``DBOS.launch()`` and stops when every workflow's result has
  been awaited through its handle. Step start and end times are taken with ``time.perf_counter()``
  inside the steps, in memory; a stage counts as completed when its step body has returned.
* On a cap the runner stops waiting, reports ``"capped": true`` with rates over what completed, and
  exits at once (in-flight workflows are abandoned, as a crash would).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import CONCURRENT_SUBMITS, latency_figures, runner_parser, stdout_to_stderr
from dbos import DBOS

SYSTEM = "dbos"
SYNCHRONOUS = {"value": "FULL"}  # set from --synchronous before launch; read by the connect listener


@sa.event.listens_for(sa.Engine, "connect")
def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={SYNCHRONOUS['value']}")


class Recorder:
    """Start and end times of step bodies, keyed by (workflow key, stage ref). One event loop: no lock."""

    def __init__(self) -> None:
        self.start: dict[tuple[str, str], float] = {}
        self.end: dict[tuple[str, str], float] = {}

    def busy_seconds(self) -> float:
        return sum(self.end[k] - self.start[k] for k in self.end if k in self.start)


REC = Recorder()


@DBOS.step()
async def noop_step(wf: str, ref: str) -> None:
    REC.start.setdefault((wf, ref), time.perf_counter())
    REC.end[(wf, ref)] = time.perf_counter()


@DBOS.step()
async def io_step(wf: str, ref: str, seconds: float) -> None:
    REC.start.setdefault((wf, ref), time.perf_counter())
    await asyncio.sleep(seconds)  # the stand-in for awaiting I/O
    REC.end[(wf, ref)] = time.perf_counter()


@DBOS.workflow()
async def chain_workflow(wf: str, length: int) -> None:
    for k in range(length):
        await noop_step(wf, f"s{k}")


@DBOS.workflow()
async def diamond_workflow(wf: str) -> None:
    await io_step(wf, "a", 0.05)
    await asyncio.gather(*(io_step(wf, f"b{k}", 0.05) for k in range(1, 9)))
    await io_step(wf, "c", 0.05)


@DBOS.workflow()
async def fan_out_workflow(wf: str, width: int) -> None:
    await noop_step(wf, "root")
    await asyncio.gather(*(io_step(wf, f"p{k}", 0.1) for k in range(width)))
    await noop_step(wf, "join")


def main(argv: list[str] | None = None) -> int:
    parser = runner_parser(__doc__.splitlines()[0], submit_modes=("sequential", "concurrent"))
    args = parser.parse_args(argv)
    if args.size < 1 or args.cap <= 0:
        parser.error("--size and --cap must be positive")

    SYNCHRONOUS["value"] = args.synchronous
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = (args.workdir / f"dbos-{args.workload}-{os.getpid()}.sqlite").resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(db)  # WAL is a property of the file: set it before DBOS opens it
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()

    with stdout_to_stderr() as out:
        result = asyncio.run(run(args, db))
        out.write(json.dumps(result) + "\n")
        out.flush()
    # A capped run leaves workflows in flight on DBOS's threads; the figures are out, so leave at once.
    os._exit(0)


async def run(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    DBOS(config={"name": "bench-peers", "system_database_url": f"sqlite:///{db}", "log_level": "WARNING"})
    DBOS.launch()

    settings = (
        "dbos 3.4.0, async @DBOS.workflow/@DBOS.step, DBOS.start_workflow_async (no queue, no concurrency "
        "limit; parallel stages via asyncio.gather of steps), default pool (20) and executor; "
        f"SQLite WAL synchronous={args.synchronous}"
    )
    if args.workload in ("W1", "W2"):
        settings += f"; {args.submit} starts"
    result: dict[str, Any] = {"system": SYSTEM, "workload": args.workload, "size": args.size}

    t0 = time.perf_counter()
    deadline = t0 + args.cap
    completed = failed = 0
    capped = False

    async def settle(handle: Any) -> None:
        nonlocal completed, failed
        try:
            await handle.get_result()
        except Exception:  # a workflow that raised: count it, as stabilize's runner counts TERMINAL ones
            failed += 1
        else:
            completed += 1

    async def start(i: int) -> Any:
        if args.workload == "W1":
            return await DBOS.start_workflow_async(chain_workflow, str(i), 3)
        if args.workload == "W2":
            return await DBOS.start_workflow_async(diamond_workflow, str(i))
        return await DBOS.start_workflow_async(fan_out_workflow, "0", args.size)

    if args.workload in ("W1", "W2", "W3"):
        count = 1 if args.workload == "W3" else args.size
        if args.submit == "concurrent" and args.workload != "W3":
            limiter = asyncio.Semaphore(CONCURRENT_SUBMITS)

            async def start_and_settle(i: int) -> None:
                async with limiter:
                    handle = await start(i)
                await settle(handle)

            try:
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    await asyncio.gather(*(start_and_settle(i) for i in range(count)))
            except TimeoutError:
                capped = True
        else:  # sequential: each start awaited before the next, then every result
            handles = []
            for i in range(count):
                if time.perf_counter() >= deadline:
                    capped = True
                    break
                handles.append(await start(i))
            try:
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    await asyncio.gather(*(settle(h) for h in handles))
            except TimeoutError:
                capped = True
        wall = time.perf_counter() - t0
        stages = len(REC.end)
        result.update(completed=completed, failed=failed, capped=capped, wall_s=round(wall, 4))
        if args.workload != "W3":
            result["submit"] = args.submit
        result["stages_completed"] = stages
        result["stages_per_s"] = round(stages / wall, 3)
        if args.workload == "W1":
            result["workflows_per_s"] = round(completed / wall, 3)
        elif args.workload == "W2":
            busy = REC.busy_seconds()
            result["workflows_per_s"] = round(completed / wall, 3)
            result["task_wait_s"] = round(busy, 3)
            result["overlap"] = round(busy / wall, 3)
    else:  # W5: one at a time, light load
        to_start: list[float] = []
        hops: list[float] = []
        for i in range(args.size):
            if time.perf_counter() >= deadline:
                capped = True
                break
            key = f"w5-{i}"
            submit_at = time.perf_counter()
            handle = await DBOS.start_workflow_async(chain_workflow, key, 2)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    await settle(handle)
            except TimeoutError:
                capped = True
                break
            to_start.append((REC.start[(key, "s0")] - submit_at) * 1000.0)
            hops.append((REC.start[(key, "s1")] - REC.end[(key, "s0")]) * 1000.0)
        wall = time.perf_counter() - t0
        result.update(completed=completed, failed=failed, capped=capped, wall_s=round(wall, 4))
        result.update(latency_figures(to_start, hops))

    result["settings"] = settings
    return result


if __name__ == "__main__":
    sys.exit(main())
