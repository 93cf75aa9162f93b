"""Peer runner: the benchmark workloads on ``stabilize`` 0.33.1 (the synchronous original).

Usage (with an interpreter that has ``stabilize==0.33.1``; see ``setup.sh`` beside this file)::

    python benchmarks/peers/stabilize_runner.py --workload W1 --size 20 --cap 120 --workdir /tmp/bench

Prints exactly one JSON line on stdout (everything else, stabilize's own logging included, goes to
stderr). Does not import stabilize_aio.

How each workload is written, in stabilize's own API (README and ``stabilize prompt``): ``Task``
subclasses with a synchronous ``execute(stage)`` registered in a ``TaskRegistry``; ``Workflow.create``
of ``StageExecution`` stages, each with one ``TaskExecution`` (``stage_start=True, stage_end=True``)
and DAG edges in ``requisite_stage_ref_ids``; a ``SqliteWorkflowStore`` and a ``SqliteQueue`` on one
file; ``QueueProcessor.start()`` (the thread-pool mode the docs prescribe for parallel work) and
``Orchestrator.start(workflow)`` to submit.

* W1 overhead: ``size`` workflows, each a chain s0 -> s1 -> s2 of one no-op task, all submitted up
  front, one by one (``Orchestrator.start`` blocks; ``--submit`` takes only ``sequential``).
* W2 I/O pipeline: ``size`` diamonds a -> b1..b8 -> c; every task does ``time.sleep(0.05)`` (a
  stabilize task is a plain ``def`` run on a worker thread, so blocking I/O is its natural form).
* W3 wide fan-out: one workflow, root -> ``size`` parallel stages of ``time.sleep(0.1)`` -> join
  (root and join are no-ops; the join lists every branch in ``requisite_stage_ref_ids``).
* W5 latency: ``size`` two-stage chains (a -> b, no-op tasks) submitted one at a time, each after the
  previous one has finished: submit -> first task starts, and task a returns -> task b starts.

Settings, and why they are fair:

* SQLite file, WAL (``STABILIZE_SQLITE_JOURNAL_MODE=WAL``, stabilize's documented opt-in) and
  ``synchronous=FULL`` by default (``--synchronous``; stabilize_aio's and DBOS's default is FULL,
  stabilize's own "safe" tier would use NORMAL). The rest of the "safe" tier is left as it is.
* ``QueueProcessorConfig`` defaults: ``max_workers=10`` handler threads (``--workers``),
  ``poll_frequency_ms=50``, deduplication on, lock heartbeats on, recovery off.
* Bulkheads: stabilize puts every custom task type in a shared ``default`` bulkhead of 5 threads and
  a queue of 20; a full bulkhead makes the task retry after seconds of backoff. So that the bulkhead
  never caps below the worker count, the two benchmark task types get their own bulkheads
  (``TaskBulkheadManager`` with a ``ResilienceConfig``) of ``max_concurrent = max_queue_size =
  workers``. This only helps stabilize.
* Everything else (handler retries, circuit breakers, event sourcing off) is stabilize's default.
* Measurement: wall time starts after the processor has started and stops when the last workflow
  has a final status. Completion is read from stabilize's ``pipeline_executions`` table through a
  separate read-only SQLite connection every 0.1 s (10 ms for W5); task start and end times are taken
  with ``time.perf_counter()`` inside the tasks. Stage counts are read from ``stage_executions``.
* stabilize is far slower than the others (each queue message costs tens of milliseconds of
  Python), so run it at small sizes with a ``--cap``; on a cap the runner stops and reports
  ``"capped": true`` with rates over what completed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import latency_figures, runner_parser, stdout_to_stderr

SYSTEM = "stabilize"
APPLICATION = "bench"
NOOP = "bench_noop"
IO = "bench_io"
FINAL_OK = "SUCCEEDED"
FINAL_OTHER = ("TERMINAL", "CANCELED", "STOPPED", "FAILED_CONTINUE")


class Recorder:
    """Start and end times of task bodies, keyed by (workflow key, stage ref)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start: dict[tuple[str, str], float] = {}
        self.end: dict[tuple[str, str], float] = {}

    def begin(self, key: tuple[str, str]) -> float:
        now = time.perf_counter()
        with self.lock:
            self.start.setdefault(key, now)
        return now

    def finish(self, key: tuple[str, str]) -> None:
        now = time.perf_counter()
        with self.lock:
            self.end[key] = now

    def busy_seconds(self) -> float:
        """Total time spent inside task bodies that finished."""
        with self.lock:
            return sum(self.end[k] - self.start[k] for k in self.end if k in self.start)


def main(argv: list[str] | None = None) -> int:
    # Orchestrator.start is a blocking call: workflows are submitted one by one (--submit sequential only).
    parser = runner_parser(__doc__.splitlines()[0], submit_modes=("sequential",))
    parser.add_argument("--workers", type=int, default=10, help="QueueProcessor max_workers (default 10)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.cap <= 0 or args.workers < 1:
        parser.error("--size, --cap and --workers must be positive")

    with stdout_to_stderr() as out:
        result = run(args)
        out.write(json.dumps(result) + "\n")
        out.flush()
    # stabilize's processor leaves daemon threads (heartbeats, bulkheads) behind; a capped run may
    # still have tasks in flight. The figures are out, so leave at once.
    os._exit(0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    # stabilize reads its SQLite settings from the environment when it opens a connection.
    os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"
    os.environ["STABILIZE_SQLITE_SYNCHRONOUS"] = args.synchronous

    from stabilize import (  # noqa: PLC0415 - imported after the environment is set
        Orchestrator,
        QueueProcessor,
        SqliteQueue,
        SqliteWorkflowStore,
        StageExecution,
        Task,
        TaskExecution,
        TaskRegistry,
        TaskResult,
        Workflow,
    )
    from stabilize.queue.processor import QueueProcessorConfig  # noqa: PLC0415
    from stabilize.resilience.bulkheads import TaskBulkheadManager  # noqa: PLC0415
    from stabilize.resilience.config import BulkheadConfig, ResilienceConfig  # noqa: PLC0415

    recorder = Recorder()

    class NoopTask(Task):
        def execute(self, stage: Any) -> Any:
            key = (stage.context["wf"], stage.ref_id)
            recorder.begin(key)
            recorder.finish(key)
            return TaskResult.success()

    class IoTask(Task):
        def execute(self, stage: Any) -> Any:
            key = (stage.context["wf"], stage.ref_id)
            recorder.begin(key)
            time.sleep(stage.context["sleep_s"])  # the stand-in for blocking I/O
            recorder.finish(key)
            return TaskResult.success()

    args.workdir.mkdir(parents=True, exist_ok=True)
    db = (args.workdir / f"stabilize-{args.workload}-{os.getpid()}.db").resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"

    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()  # the documented way to create the queue table
    registry = TaskRegistry()
    registry.register(NOOP, NoopTask)
    registry.register(IO, IoTask)
    bulkheads = TaskBulkheadManager(
        ResilienceConfig(
            bulkheads=tuple(
                (name, BulkheadConfig(max_concurrent=args.workers, max_queue_size=args.workers)) for name in (NOOP, IO)
            )
        )
    )
    config = QueueProcessorConfig(max_workers=args.workers)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry, bulkhead_manager=bulkheads)
    orchestrator = Orchestrator(queue, store=store)

    def stage(wf: str, ref: str, task: str, after: set[str], **context: Any) -> Any:
        return StageExecution(
            ref_id=ref,
            type=task,
            name=ref,
            context={"wf": wf, **context},
            requisite_stage_ref_ids=after,
            tasks=[TaskExecution.create(name=ref, implementing_class=task, stage_start=True, stage_end=True)],
        )

    def chain(wf: str, length: int) -> Any:
        stages = [stage(wf, f"s{k}", NOOP, {f"s{k - 1}"} if k else set()) for k in range(length)]
        return Workflow.create(application=APPLICATION, name=f"chain-{wf}", stages=stages)

    def diamond(wf: str) -> Any:
        branches = [f"b{k}" for k in range(1, 9)]
        stages = [stage(wf, "a", IO, set(), sleep_s=0.05)]
        stages += [stage(wf, b, IO, {"a"}, sleep_s=0.05) for b in branches]
        stages.append(stage(wf, "c", IO, set(branches), sleep_s=0.05))
        return Workflow.create(application=APPLICATION, name=f"diamond-{wf}", stages=stages)

    def fan_out(wf: str, width: int) -> Any:
        branches = [f"p{k}" for k in range(width)]
        stages = [stage(wf, "root", NOOP, set())]
        stages += [stage(wf, b, IO, {"root"}, sleep_s=0.1) for b in branches]
        stages.append(stage(wf, "join", NOOP, set(branches)))
        return Workflow.create(application=APPLICATION, name=f"fanout-{wf}", stages=stages)

    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)

    def statuses() -> dict[str, int]:
        rows = reader.execute(
            "SELECT status, COUNT(*) FROM pipeline_executions WHERE application = ? GROUP BY status", (APPLICATION,)
        ).fetchall()
        return dict(rows)

    def finished(counts: dict[str, int]) -> tuple[int, int]:
        return counts.get(FINAL_OK, 0), sum(counts.get(s, 0) for s in FINAL_OTHER)

    def stages_done() -> int:
        (count,) = reader.execute("SELECT COUNT(*) FROM stage_executions WHERE status = ?", (FINAL_OK,)).fetchone()
        return int(count)

    def wait_all(total: int, deadline: float, interval: float) -> tuple[int, int, bool]:
        while True:
            ok, bad = finished(statuses())
            if ok + bad >= total:
                return ok, bad, False
            if time.perf_counter() >= deadline:
                return ok, bad, True
            time.sleep(interval)

    settings = (
        f"stabilize 0.33.1, QueueProcessor.start() max_workers={args.workers} threads, poll_frequency_ms=50, "
        f"bulkhead per task type {args.workers} concurrent, dedup on, recovery off; "
        f"SQLite WAL synchronous={args.synchronous}; completion polled from the store every "
        f"{'10 ms' if args.workload == 'W5' else '0.1 s'}"
    )
    result: dict[str, Any] = {"system": SYSTEM, "workload": args.workload, "size": args.size}

    processor.start()
    t0 = time.perf_counter()
    deadline = t0 + args.cap

    if args.workload in ("W1", "W2", "W3"):
        if args.workload == "W1":
            workflows = [chain(str(i), 3) for i in range(args.size)]
        elif args.workload == "W2":
            workflows = [diamond(str(i)) for i in range(args.size)]
        else:
            workflows = [fan_out("0", args.size)]
        submitted = 0
        for wf in workflows:
            if time.perf_counter() >= deadline:
                break
            orchestrator.start(wf)
            submitted += 1
        ok, bad, capped = wait_all(len(workflows), deadline, 0.1)
        wall = time.perf_counter() - t0
        stages = stages_done()
        result.update(completed=ok, failed=bad, capped=capped or submitted < len(workflows), wall_s=round(wall, 4))
        if args.workload != "W3":
            result["submit"] = args.submit
        result["stages_completed"] = stages
        result["tasks_completed"] = len(recorder.end)  # task bodies that returned; a stage completes later
        result["stages_per_s"] = round(stages / wall, 3)
        if args.workload == "W1":
            result["workflows_per_s"] = round(ok / wall, 3)
        elif args.workload == "W2":
            busy = recorder.busy_seconds()
            result["workflows_per_s"] = round(ok / wall, 3)
            result["task_wait_s"] = round(busy, 3)
            result["overlap"] = round(busy / wall, 3)
    else:  # W5: one at a time, light load
        to_start: list[float] = []
        hops: list[float] = []
        ok = bad = 0
        capped = False
        for i in range(args.size):
            if time.perf_counter() >= deadline:
                capped = True
                break
            key = f"w5-{i}"
            wf = chain(key, 2)
            submit_at = time.perf_counter()
            orchestrator.start(wf)
            ok_i, bad_i, capped = wait_all(ok + bad + 1, deadline, 0.01)
            if capped:
                break
            ok, bad = ok_i, bad_i
            with recorder.lock:
                first = recorder.start.get((key, "s0"))
                first_end = recorder.end.get((key, "s0"))
                second = recorder.start.get((key, "s1"))
            if first is not None:
                to_start.append((first - submit_at) * 1000.0)
            if first_end is not None and second is not None:
                hops.append((second - first_end) * 1000.0)
        wall = time.perf_counter() - t0
        result.update(completed=ok, failed=bad, capped=capped, wall_s=round(wall, 4))
        result.update(latency_figures(to_start, hops))

    result["settings"] = settings
    processor.stop(wait=False)
    return result


if __name__ == "__main__":
    sys.exit(main())
