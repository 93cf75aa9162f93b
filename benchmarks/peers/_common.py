"""What both peer runners share: their command line, percentiles, and keeping stdout for the JSON line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

#: How W1 and W2 submit their workflows (run.py runs both where a system has both):
#: "concurrent": every submit in a task of its own, at most CONCURRENT_SUBMITS in flight, each then
#: awaits its result; "sequential": each submit awaited before the next, then all results awaited.
SUBMIT_MODES = ("concurrent", "sequential")
CONCURRENT_SUBMITS = 1_000


def runner_parser(description: str, submit_modes: tuple[str, ...] = SUBMIT_MODES) -> argparse.ArgumentParser:
    """The arguments every runner takes; a runner adds its own settings.

    ``submit_modes`` are the ``--submit`` modes the runner can do, its default first.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", required=True, choices=["W1", "W2", "W3", "W5"])
    parser.add_argument("--size", required=True, type=int, help="workflows (W1, W2, W5) or parallel stages (W3)")
    parser.add_argument("--cap", required=True, type=float, help="seconds; stop and report rates when reached")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument(
        "--submit",
        choices=submit_modes,
        default=submit_modes[0],
        help="how W1 and W2 submit their workflows (default: %(default)s); W3 is one workflow, W5 one at a time",
    )
    return parser


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), interpolated linearly between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_figures(to_start: list[float], hops: list[float]) -> dict[str, float | int | None]:
    """W5's figures: p50/p99 of submit -> first task start and of task end -> dependant start, in ms."""
    out: dict[str, float | int | None] = {}
    for name, values in (("submit_to_start", to_start), ("hop", hops)):
        for q in (50, 99):
            value = percentile(values, q)
            out[f"{name}_p{q}_ms"] = None if value is None else round(value, 3)
    out["samples"] = len(hops)
    return out


@contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Send everything written to fd 1 to stderr; yield a stream on the real stdout for the JSON line."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        yield real
    finally:
        real.flush()
