"""The benchmark suite runs (a smoke test that catches breakage; it judges no speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmarks_run_every_workload_without_error() -> None:
    """`benchmarks/run.py --quick` exits 0 and reports a row for each workload, none an error."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| W")]
    assert ["W1", "W2", "W3", "W4", "W5"] == [row.split("|")[1].strip() for row in rows]
    assert not [row for row in rows if "error" in row]
