"""Run every workload on stabilize_aio and its peers, one subprocess each, and print one table.

    python benchmarks/run.py                 # everything (needs benchmarks/peers/setup.sh run once)
    python benchmarks/run.py --quick         # small sizes, stabilize_aio only, under a minute
    python benchmarks/run.py --write-results # also rewrite benchmarks/RESULTS.md

Each system runs in its own process (stabilize keeps process-global state and
threads), with its own interpreter when it needs its own virtual environment.
Peers too slow for the full size run a smaller size under a time cap; their
figures are rates, so the ratio column compares rates (or wall times of the
same size where both ran it).

W1 and W2 run in two submission modes, shown in the `submit` column:
`concurrent` (a task per workflow, at most 1,000 submits in flight, each then
awaiting its result) and `sequential` (each submit awaited before the next,
then every result). stabilize_aio and DBOS run both; stabilize only
`sequential` (its `Orchestrator.start` blocks). A ratio is computed only
between rows of the same workload and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"


@dataclass(frozen=True)
class Job:
    system: str
    workload: str
    size: int
    cap: float
    extra: tuple[str, ...] = ()
    submit: str = ""  # W1/W2: "concurrent" or "sequential" (the runner's --submit)


def interpreter(system: str) -> str:
    """The Python that runs a system: its own venv if it has one, else this one."""
    candidate = VENVS / system / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


RUNNERS = {
    "stabilize_aio": HERE / "aio_runner.py",
    "stabilize": HERE / "peers" / "stabilize_runner.py",
    "dbos": HERE / "peers" / "dbos_runner.py",
}


MODES = ("concurrent", "sequential")


def plan(quick: bool, peers: bool) -> list[Job]:
    if quick:
        return [
            *(Job("stabilize_aio", "W1", 100, 30, submit=mode) for mode in MODES),
            *(Job("stabilize_aio", "W2", 20, 30, submit=mode) for mode in MODES),
            Job("stabilize_aio", "W3", 100, 30),
            Job("stabilize_aio", "W4", 1_000, 30, ("--poll", "1")),
            Job("stabilize_aio", "W5", 50, 30),
        ]
    jobs = [
        *(Job("stabilize_aio", "W1", 500, 120, submit=mode) for mode in MODES),
        *(Job("stabilize_aio", "W2", 200, 120, submit=mode) for mode in MODES),
        Job("stabilize_aio", "W3", 1_000, 120),
        Job("stabilize_aio", "W4", 100_000, 240, ("--poll", "30")),
        Job("stabilize_aio", "W5", 500, 60),
        Job("stabilize_aio", "W5H", 300, 60),
    ]
    if peers:
        jobs += [
            *(Job("dbos", "W1", 500, 120, submit=mode) for mode in MODES),
            *(Job("dbos", "W2", 200, 120, submit=mode) for mode in MODES),
            Job("dbos", "W3", 1_000, 120),
            Job("dbos", "W5", 200, 60),
            Job("stabilize", "W1", 20, 90, submit="sequential"),
            Job("stabilize", "W2", 5, 90, submit="sequential"),
            Job("stabilize", "W3", 50, 120),
            Job("stabilize", "W5", 20, 90),
        ]
    return jobs


def run_job(job: Job, workdir: Path) -> dict[str, Any]:
    cmd = [
        interpreter(job.system),
        str(RUNNERS[job.system]),
        "--workload",
        job.workload,
        "--size",
        str(job.size),
        "--cap",
        str(job.cap),
        "--workdir",
        str(workdir / job.system),
        *job.extra,
        *(("--submit", job.submit) if job.submit else ()),
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=job.cap + 120, check=False)
    except subprocess.TimeoutExpired:
        error = f"no answer within {job.cap + 120:.0f}s"
        return {"system": job.system, "workload": job.workload, "submit": job.submit, "error": error}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        error = " / ".join(tail) or f"exit {done.returncode}"
        return {"system": job.system, "workload": job.workload, "submit": job.submit, "error": error}
    result: dict[str, Any] = json.loads(lines[-1])
    result.setdefault("size", job.size)
    result.setdefault("submit", job.submit)
    result["process_s"] = time.perf_counter() - started
    return result


PG_URL = os.environ.get("STABILIZE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def run_w6(workload: str, size: int, engines: int, cap: float) -> dict[str, Any]:
    """W6: a workload on PostgreSQL by `engines` processes at once, each submitting its share."""
    import asyncio  # noqa: PLC0415 - only the PostgreSQL row needs the driver
    import uuid  # noqa: PLC0415

    import asyncpg  # noqa: PLC0415

    from stabilize_aio.store import upgrade  # noqa: PLC0415

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}?schema={schema}"
    name = f"W6 {workload} x{engines}"
    try:
        asyncio.run(upgrade(url))
    except Exception as exc:  # no server: the row says so
        return {"system": "stabilize_aio", "workload": name, "error": f"PostgreSQL unavailable: {exc}"}
    start_at = time.time() + 3.0 + engines
    cmd = [sys.executable, str(RUNNERS["stabilize_aio"]), "--workload", workload, "--size", str(size // engines)]
    cmd += ["--cap", str(cap), "--url", url, "--engines", str(engines), "--start-at", str(start_at)]
    try:
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(engines)
        ]
        outs = [p.communicate(timeout=cap + 120) for p in procs]
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(PG_URL)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()

        asyncio.run(drop())
    parts = []
    for (out, err), proc in zip(outs, procs, strict=True):
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            return {"system": "stabilize_aio", "workload": name, "error": err.strip().splitlines()[-1:]}
        parts.append(json.loads(lines[-1]))
    completed = sum(p["completed"] for p in parts)
    wall = max(p["wall_s"] for p in parts)
    stages = 3 if workload == "W1" else 10
    return {
        "system": "stabilize_aio",
        "workload": name,
        "size": size,
        "completed": completed,
        "wall_s": wall,
        "stages_per_s": stages * completed / wall,
        "workflows_per_s": completed / wall,
        "submit": parts[0].get("submit", ""),
        "settings": parts[0]["settings"],
    }


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "n/a" if value is None else str(value)


def headline(r: dict[str, Any]) -> tuple[str, float | None, bool]:
    """The figure a workload is judged by: (text, number, higher_is_better)."""
    w = r["workload"]
    if "error" in r:
        return (f"error: {r['error']}"[:60], None, True)
    if w.startswith("W6"):
        return (f"{fmt(r['stages_per_s'], 0)} stages/s ({fmt(r['wall_s'], 2)} s)", r["stages_per_s"], True)
    if w == "W1":
        return (f"{fmt(r['stages_per_s'], 0)} stages/s ({fmt(r['workflows_per_s'], 0)} wf/s)", r["stages_per_s"], True)
    if w == "W2":
        return (f"{fmt(r['wall_s'], 2)} s, overlap {fmt(r.get('overlap'), 0)}", r["wall_s"], False)
    if w == "W3":
        if r.get("size", 1000) != 1000:  # a peer's smaller fan-out: compare as a rate
            return (f"{fmt(r['stages_per_s'], 1)} stages/s (size {r['size']})", r["stages_per_s"], True)
        return (f"{fmt(r['wall_s'], 2)} s", r["wall_s"], False)
    if w == "W4":
        return (
            f"parked RSS {fmt(r['parked_rss_mib'], 0)} MiB (peak {fmt(r.get('peak_rss_mib'), 0)}), "
            f"submit {fmt(r['submit_s'], 1)} s, "
            f"wake→done {fmt(r['wake_to_done_s'], 1)} s",
            r["parked_rss_mib"],
            False,
        )
    return (
        f"start p50 {fmt(r['submit_to_start_p50_ms'], 2)} / p99 {fmt(r['submit_to_start_p99_ms'], 2)} ms; "
        f"hop p50 {fmt(r['hop_p50_ms'], 2)} / p99 {fmt(r['hop_p99_ms'], 2)} ms",
        r["hop_p50_ms"],
        False,
    )


def ratio(ours: dict[str, Any] | None, theirs: dict[str, Any]) -> str:
    """How many times better stabilize_aio is (>1 means faster / smaller)."""
    if ours is None:
        return "n/a"
    _, a, higher = headline(ours)
    _, b, _ = headline(theirs)
    if a is None or b is None or a == 0 or b == 0:
        return "n/a"
    if theirs.get("size") != ours.get("size") and theirs["workload"] in ("W2", "W3"):
        # different sizes: compare completion rates, not wall times
        a = ours["completed"] / ours["wall_s"]
        b = theirs["completed"] / theirs["wall_s"]
        higher = True
    return f"{(a / b if higher else b / a):,.1f}x"


def table(results: list[dict[str, Any]]) -> str:
    """One row per result; a peer's ratio is against stabilize_aio's row of the same workload and submit mode."""
    ours = {(r["workload"], r.get("submit", "")): r for r in results if r["system"] == "stabilize_aio"}
    rows = ["| workload | submit | system | size | result | stabilize_aio is |", "|---|---|---|---|---|---|"]

    def order(r: dict[str, Any]) -> tuple[str, str, bool, str]:
        return r["workload"], r.get("submit", ""), r["system"] != "stabilize_aio", r["system"]

    for r in sorted(results, key=order):
        text, _, _ = headline(r)
        capped = " (capped)" if r.get("capped") else ""
        submit = r.get("submit", "")
        rel = "" if r["system"] == "stabilize_aio" else ratio(ours.get((r["workload"], submit)), r)
        size = f"{fmt(r.get('completed'))}/{fmt(r.get('size'))}{capped}"
        rows.append(f"| {r['workload']} | {submit} | {r['system']} | {size} | {text} | {rel} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, stabilize_aio only")
    parser.add_argument("--no-peers", action="store_true", help="stabilize_aio only, full sizes")
    parser.add_argument("--write-results", action="store_true", help="rewrite benchmarks/RESULTS.md")
    parser.add_argument("--only", default="", help="comma-separated workloads to run (e.g. W1,W3)")
    parser.add_argument("--no-postgres", action="store_true", help="skip W6 (PostgreSQL)")
    args = parser.parse_args()
    jobs = plan(args.quick, peers=not (args.quick or args.no_peers))
    if args.only:
        wanted = set(args.only.upper().split(","))
        jobs = [j for j in jobs if j.workload in wanted]
    results = []
    with tempfile.TemporaryDirectory(prefix="stabilize-bench-") as tmp:
        for job in jobs:
            print(f"running {job.system} {job.workload} size={job.size} ...", file=sys.stderr, flush=True)
            results.append(run_job(job, Path(tmp)))
    if not (args.quick or args.no_postgres) and (not args.only or "W6" in args.only.upper()):
        for workload, size in (("W1", 2000), ("W2", 200)):
            for engines in (1, 2):
                print(f"running stabilize_aio W6 {workload} on PostgreSQL x{engines} ...", file=sys.stderr, flush=True)
                results.append(run_w6(workload, size, engines, 120))
    text = table(results)
    print(text)
    errors = [r for r in results if "error" in r]
    if args.write_results:
        machine = f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        settings = "\n".join(sorted({f"- {r['system']}: {r['settings']}" for r in results if "settings" in r}))
        (HERE / "RESULTS.md").write_text(
            f"# Benchmark results\n\nRun on {time.strftime('%Y-%m-%d')} on {machine}, "
            f"with `python benchmarks/run.py{' --quick' if args.quick else ''}`.\n\n{text}\n\n"
            f"Settings:\n{settings}\n\nRaw figures:\n\n```json\n"
            + "\n".join(json.dumps(r, sort_keys=True) for r in results)
            + "\n```\n"
        )
    return 1 if errors and args.quick else 0


if __name__ == "__main__":
    raise SystemExit(main())
