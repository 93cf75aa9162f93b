"""The command line: ``stabilize-aio demo``, ``db upgrade --url URL``, ``worker --app module:setup``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from .._errors import StoreError
from ..store import upgrade
from ..store.url import redact_url
from . import demo as _demo
from .worker import run_worker


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = argparse.ArgumentParser(prog="stabilize-aio", description="durable async DAG workflows")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small pipeline on embedded SQLite and show it")
    demo.add_argument("--db", default="stabilize-demo.db", help="the SQLite file (default: %(default)s)")
    demo.add_argument(
        "--workflows",
        type=_workflow_count,
        default=3,
        help=f"how many runs to submit, 1 to {_demo.MAX_WORKFLOWS:,} (default: %(default)s)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="show the engine's logs")
    db = sub.add_parser("db", help="manage the database").add_subparsers(dest="db_command", required=True)
    db_upgrade = db.add_parser(
        "upgrade", help="apply the schema migrations the database lacks (idempotent; PostgreSQL needs it first)"
    )
    db_upgrade.add_argument("--url", required=True, help="postgresql://user@host/db[?schema=NAME] or sqlite:///path.db")
    db_upgrade.add_argument("-v", "--verbose", action="store_true", help="log each migration applied")
    worker = sub.add_parser("worker", help="run an engine until SIGTERM/SIGINT, then stop gracefully")
    worker.add_argument("--url", default="sqlite:///stabilize.db", help="the store URL (default: %(default)s)")
    worker.add_argument("--app", required=True, help="module:setup, a callable that registers the tasks")
    worker.add_argument("--grace", type=float, default=30.0, help="seconds running tasks get on stop")
    worker.add_argument("--lease", type=float, default=30.0, help="shard lease seconds (PostgreSQL)")
    worker.add_argument("--heartbeat", type=float, default=None, help="lease renewal seconds (default: lease/3)")
    worker.add_argument("--poll", type=float, default=5.0, help="safety-net poll seconds (PostgreSQL)")
    worker.add_argument("-v", "--verbose", action="store_true", help="show the engine's logs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s %(message)s"
    )
    if args.command == "demo":
        return anyio.run(_demo.run, args.db, args.workflows)
    if args.command == "db":
        return anyio.run(_upgrade, args.url)
    if args.command == "worker":
        options = {"lease": args.lease, "heartbeat": args.heartbeat, "poll_interval": args.poll}
        return anyio.run(run_worker, args.url, args.app, args.grace, options)
    return 2  # pragma: no cover - argparse rejects other commands


def _workflow_count(text: str) -> int:
    """``--workflows``: a whole number from 1 to the demo's maximum, else argparse's usage error."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= _demo.MAX_WORKFLOWS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {_demo.MAX_WORKFLOWS:,}, not {count}")
    return count


async def _upgrade(url: str) -> int:
    """``db upgrade``: migrate and say what was applied."""
    shown = redact_url(url)
    try:
        applied = await upgrade(url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if applied:
        print(f"{shown}: applied migration{'s' if len(applied) > 1 else ''} {', '.join(map(str, applied))}")
    else:
        print(f"{shown}: up to date, nothing to apply")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
