"""The command line: ``stabilize-aio demo`` and friends."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from . import _demo


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = argparse.ArgumentParser(prog="stabilize-aio", description="durable async DAG workflows")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small pipeline on embedded SQLite and show it")
    demo.add_argument("--db", default="stabilize-demo.db", help="the SQLite file (default: %(default)s)")
    demo.add_argument("--workflows", type=int, default=3, help="how many runs to submit")
    demo.add_argument("-v", "--verbose", action="store_true", help="show the engine's logs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s %(message)s"
    )
    if args.command == "demo":
        return anyio.run(_demo.run, args.db, args.workflows)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
