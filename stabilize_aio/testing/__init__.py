"""Helpers for users' tests.

:class:`FakeClock` stands still until the test advances it; pass it where a
part takes a ``clock`` (a :class:`Clock`; :class:`SystemClock` is the real one).

Open engines with :func:`running_engine` inside the test itself, not in a fixture:
pytest-asyncio runs a fixture's setup and teardown in different tasks, and an
engine's task group must be entered and left by the same task.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .._clock import Clock, SystemClock
from .._engine import Engine
from .clock import FakeClock

__all__ = ("running_engine", "FakeClock", "Clock", "SystemClock")


@asynccontextmanager
async def running_engine(
    setup: Callable[[Engine], None] | None = None,
    *,
    path: str | Path | None = None,
    **engine_options: Any,
) -> AsyncIterator[Engine]:
    """Run an engine on a temporary SQLite file (or ``path``) for the block.

    Args:
        setup: called with the engine before it starts: register tasks there.
        path: a database file to use instead of a fresh temporary one.
        **engine_options: passed to :class:`Engine`.
    """
    with tempfile.TemporaryDirectory(prefix="stabilize-aio-") as tmp:
        db = Path(path) if path is not None else Path(tmp) / "test.db"
        engine = Engine(f"sqlite:///{db}", **engine_options)
        if setup is not None:
            setup(engine)
        async with engine:
            yield engine
