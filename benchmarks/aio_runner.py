"""stabilize_aio side of the benchmarks: one workload per invocation, one JSON line out.

    python benchmarks/aio_runner.py --workload W1 --size 500 --cap 120 --workdir /tmp/bench

Settings (stated so the comparison is fair): one engine process on an SQLite
file in WAL mode with ``synchronous=FULL`` (an fsync per group commit, the
engine's default); task concurrency 1,000 per task type; W1 and W2 submit their
workflows as ``--submit`` says, the same two ways the DBOS runner can start them:
``concurrent`` (the default: every submit in a task of its own, at most 1,000 in
flight, each then awaits its run with ``run.wait``) or ``sequential`` (each
``submit`` awaited before the next, then every run awaited together); no polling
interval is involved anywhere except W4's own 30 s ``running`` poll, which is
part of the workload.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from stabilize_aio import Engine, MultiInstance, Stage, StageView, TaskResult, Workflow, WorkflowRun, WorkflowStatus
from stabilize_aio.store.shards import SHARDS

CONCURRENCY = 1_000


URL: str | None = None  # --url: run on this database (PostgreSQL) instead of a fresh SQLite file
ENGINES = 1  # --engines: how many engine processes share the database (W6)
START_AT: float | None = None  # --start-at: the wall-clock time every process starts submitting (W6)
SUBMIT = "concurrent"  # --submit: how run_many submits (W1, W2 and W6)
ADMISSION: int | None = None  # --admission N: W1's runs under Workflow(concurrency_key=..., max_concurrent=N)


def engine_for(workdir: Path, name: str) -> Engine:
    """The engine of a workload: a fresh SQLite file, or --url with lease times fit for a benchmark."""
    if URL is None:
        return Engine(fresh_db(workdir, name))
    return Engine(URL, lease=5, heartbeat=0.25, poll_interval=1)


async def settle(engine: Engine) -> None:
    """With several processes: wait for this one's fair share of shards, then for the common start time."""
    if URL is not None:
        share = SHARDS // ENGINES
        with anyio.fail_after(60):
            while len(engine.statistics().leases) != share:
                await engine.wait_leases_changed()
    if START_AT is not None:
        await anyio.sleep(max(0.0, START_AT - time.time()))


def fresh_db(workdir: Path, name: str) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.db"
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def chain3() -> Workflow:
    admission: dict[str, Any] = {} if ADMISSION is None else {"concurrency_key": "w1", "max_concurrent": ADMISSION}
    return Workflow(
        application="bench",
        name="w1",
        **admission,
        stages=[
            Stage("a", "noop"),
            Stage("b", "noop", requisites=["a"]),
            Stage("c", "noop", requisites=["b"]),
        ],
    )


async def run_many(engine: Engine, workflows: list[Workflow], cap: float) -> tuple[int, float]:
    """Submit all (as SUBMIT says), wait for each; returns (succeeded, wall seconds)."""
    done = 0
    start = time.perf_counter()

    async def settle(run: WorkflowRun) -> None:
        nonlocal done
        view = await run.wait()
        if view.status is WorkflowStatus.SUCCEEDED:
            done += 1

    with anyio.move_on_after(cap):
        if SUBMIT == "sequential":  # each submit awaited before the next, then every run
            runs = [await engine.submit(wf) for wf in workflows]
            async with anyio.create_task_group() as tg:
                for run in runs:
                    tg.start_soon(settle, run)
        else:  # concurrent: a task per workflow, at most 1,000 submits in flight
            limiter = anyio.CapacityLimiter(1_000)

            async def one(wf: Workflow) -> None:
                async with limiter:
                    run = await engine.submit(wf)
                await settle(run)

            async with anyio.create_task_group() as tg:
                for wf in workflows:
                    tg.start_soon(one, wf)
    return done, time.perf_counter() - start


async def w1(workdir: Path, size: int, cap: float) -> dict[str, Any]:
    engine = engine_for(workdir, "w1")

    @engine.task("noop", concurrency=CONCURRENCY)
    async def noop(stage: StageView) -> TaskResult:
        return TaskResult.success()

    async with engine:
        await settle(engine)
        done, wall = await run_many(engine, [chain3() for _ in range(size)], cap)
        stats = engine.statistics()
    return {
        "completed": done,
        "wall_s": wall,
        "workflows_per_s": done / wall,
        "stages_per_s": 3 * done / wall,
        "commits": stats.commits,
        "transitions": stats.transitions,
    }


async def w2(workdir: Path, size: int, cap: float) -> dict[str, Any]:
    engine = engine_for(workdir, "w2")
    waited = 0.0

    @engine.task("io", concurrency=CONCURRENCY * 2)
    async def io(stage: StageView) -> TaskResult:
        nonlocal waited
        t0 = time.perf_counter()
        await anyio.sleep(0.05)
        waited += time.perf_counter() - t0
        return TaskResult.success()

    branches = [Stage(f"b{i}", "io", requisites=["a"]) for i in range(1, 9)]
    wf = Workflow(
        application="bench",
        name="w2",
        stages=[Stage("a", "io"), *branches, Stage("c", "io", requisites=[b.ref_id for b in branches])],
    )
    async with engine:
        await settle(engine)
        done, wall = await run_many(engine, [wf] * size, cap)
    return {"completed": done, "wall_s": wall, "overlap": waited / wall, "stages_per_s": 10 * done / wall}


async def w3(workdir: Path, size: int, cap: float) -> dict[str, Any]:
    engine = Engine(fresh_db(workdir, "w3"))

    @engine.task("io", concurrency=max(size, 1) + 2)
    async def io(stage: StageView) -> TaskResult:
        await anyio.sleep(0.1)
        return TaskResult.success()

    stages = [Stage("root", "io")]
    stages += [Stage(f"s{i}", "io", requisites=["root"]) for i in range(size)]
    stages.append(Stage("join", "io", requisites=[f"s{i}" for i in range(size)]))
    async with engine:
        done, wall = await run_many(engine, [Workflow(application="bench", name="w3", stages=stages)], cap)
    return {"completed": done, "wall_s": wall, "stages_per_s": (size + 2) * done / wall}


async def w7(workdir: Path, size: int, cap: float) -> dict[str, Any]:
    """One multi-instance stage of ``size`` instances, each a 10 ms task (1,000 at a time), then a join."""
    engine = Engine(fresh_db(workdir, "w7"))

    @engine.task("io", concurrency=CONCURRENCY)
    async def io(stage: StageView) -> TaskResult:
        await anyio.sleep(0.01)
        return TaskResult.success(outputs={"k": stage.context.get("instance_index")})

    stages = [
        Stage("fan", "io", instances=MultiInstance(count=size, max_parallel=CONCURRENCY)),
        Stage("after", "io", requisites=["fan"]),
    ]
    async with engine:
        before = rss_mib()
        done, wall = await run_many(engine, [Workflow(application="bench", name="w7", stages=stages)], cap)
        stats = engine.statistics()
    return {
        "completed": done,
        "wall_s": wall,
        "instances_per_s": size * done / wall,
        "rss_before_mib": before,
        "rss_after_mib": rss_mib(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "commits": stats.commits,
    }


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def w4(workdir: Path, size: int, cap: float, poll: float) -> dict[str, Any]:
    """`size` workflows park on a durable `poll`-second timer, then finish; memory while parked."""
    engine = Engine(fresh_db(workdir, "w4"))
    finished = 0
    all_done = anyio.Event()

    @engine.task("park", concurrency=CONCURRENCY, poll_interval=poll)
    async def park(stage: StageView) -> TaskResult:
        if stage.context.get("polled"):
            return TaskResult.success()
        return TaskResult.running(context={"polled": True})

    @engine.task("noop", concurrency=CONCURRENCY)
    async def noop(stage: StageView) -> TaskResult:
        nonlocal finished
        finished += 1
        if finished == size:
            all_done.set()
        return TaskResult.success()

    wf = Workflow(application="bench", name="w4", stages=[Stage("p", "park"), Stage("n", "noop", requisites=["p"])])
    remaining = size

    async def submitter() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await engine.submit(wf)

    out: dict[str, Any] = {}
    async with engine:
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(min(size, 1_000)):  # 1,000 concurrent submitters, not 100,000 tasks
                tg.start_soon(submitter)
        submitted = time.perf_counter()
        out["submit_s"] = submitted - t0
        await engine.wait_idle()  # every workflow has polled once and parked on its timer
        stats = engine.statistics()
        out["parked_rss_mib"] = rss_mib()
        out["live_actors_parked"] = stats.live_actors
        out["timers_pending"] = stats.timers_pending
        with anyio.move_on_after(cap):
            await all_done.wait()
        end = time.perf_counter()
        await engine.wait_idle()
    out["completed"] = finished
    # Timers come due over the submission period, from t0 + poll to submitted + poll.
    out["wake_to_done_s"] = end - (submitted + poll)  # lag after the last timer came due
    out["first_due_to_done_s"] = end - (t0 + poll)
    out["wall_s"] = end - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


async def w5(workdir: Path, size: int, cap: float, heavy: bool) -> dict[str, Any]:
    """Latency: submit -> first task start, and task end -> dependant start (2-stage chain)."""
    engine = Engine(fresh_db(workdir, "w5h" if heavy else "w5"))
    submitted: dict[str, float] = {}
    first_start: dict[str, float] = {}
    first_end: dict[str, float] = {}
    second_start: dict[str, float] = {}

    @engine.task("first", concurrency=CONCURRENCY)
    async def first(stage: StageView) -> TaskResult:
        first_start[stage.workflow_id] = time.perf_counter()
        first_end[stage.workflow_id] = time.perf_counter()
        return TaskResult.success()

    @engine.task("second", concurrency=CONCURRENCY)
    async def second(stage: StageView) -> TaskResult:
        second_start[stage.workflow_id] = time.perf_counter()
        return TaskResult.success()

    @engine.task("load", concurrency=CONCURRENCY)
    async def load(stage: StageView) -> TaskResult:
        return TaskResult.success()

    wf = Workflow(application="bench", name="w5", stages=[Stage("a", "first"), Stage("b", "second", requisites=["a"])])
    background = Workflow(
        application="bench", name="load", stages=[Stage("x", "load"), Stage("y", "load", requisites=["x"])]
    )

    async def generate_load(stop: anyio.Event) -> None:
        async def one() -> None:
            await (await engine.submit(background)).wait()

        while not stop.is_set():
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(one)

    async with engine:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if heavy:
                tg.start_soon(generate_load, stop)
            with anyio.move_on_after(cap):
                for _ in range(size):
                    t = time.perf_counter()
                    run = await engine.submit(wf)
                    submitted[run.workflow_id] = t
                    await run.wait()
            stop.set()
    ids = [w for w in submitted if w in second_start]
    to_start = sorted((first_start[w] - submitted[w]) * 1000 for w in ids)
    hops = sorted((second_start[w] - first_end[w]) * 1000 for w in ids)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")

    return {
        "completed": len(ids),
        "submit_to_start_p50_ms": statistics.median(to_start),
        "submit_to_start_p99_ms": pct(to_start, 0.99),
        "hop_p50_ms": statistics.median(hops),
        "hop_p99_ms": pct(hops, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", required=True, choices=["W1", "W2", "W3", "W4", "W5", "W5H", "W7"])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--cap", type=float, default=300.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stabilize-bench"))
    parser.add_argument("--poll", type=float, default=30.0, help="W4's poll interval in seconds")
    parser.add_argument("--url", default=None, help="run W1/W2 on this database (PostgreSQL) instead of SQLite")
    parser.add_argument("--engines", type=int, default=1, help="engine processes sharing --url (W6)")
    parser.add_argument("--start-at", type=float, default=None, help="wall-clock time to start submitting")
    parser.add_argument(
        "--admission", type=int, default=None, help="W1 under an admission limit of this many runs at once"
    )
    parser.add_argument(
        "--submit",
        choices=["concurrent", "sequential"],
        default="concurrent",
        help="how W1 and W2 submit their workflows (default: %(default)s)",
    )
    args = parser.parse_args()
    global URL, ENGINES, START_AT, SUBMIT, ADMISSION
    URL, ENGINES, START_AT, SUBMIT, ADMISSION = args.url, args.engines, args.start_at, args.submit, args.admission
    jobs: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "W1": lambda: w1(args.workdir, args.size, args.cap),
        "W2": lambda: w2(args.workdir, args.size, args.cap),
        "W3": lambda: w3(args.workdir, args.size, args.cap),
        "W7": lambda: w7(args.workdir, args.size, args.cap),
        "W4": lambda: w4(args.workdir, args.size, args.cap, args.poll),
        "W5": lambda: w5(args.workdir, args.size, args.cap, heavy=False),
        "W5H": lambda: w5(args.workdir, args.size, args.cap, heavy=True),
    }
    t0 = time.perf_counter()
    result = anyio.run(jobs[args.workload])
    result.setdefault("wall_s", time.perf_counter() - t0)
    if args.workload in ("W1", "W2"):
        result["submit"] = args.submit
    result.update(
        system="stabilize_aio",
        workload=args.workload,
        size=args.size,
        settings=(
            f"{args.engines} process(es) on PostgreSQL, leases 5 s / heartbeat 0.25 s, concurrency 1000/task type"
            if args.url
            else "1 process, SQLite WAL synchronous=FULL, concurrency 1000/task type, no polling"
        )
        + (f", {args.submit} submits" if args.workload in ("W1", "W2") else "")
        + (f", admission max_concurrent={args.admission}" if args.admission is not None else ""),
        python=sys.version.split()[0],
        pid=os.getpid(),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
