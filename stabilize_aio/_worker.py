"""``stabilize-aio worker``: run an engine as a process of its own until SIGTERM or SIGINT.

This entry point owns its process, so it maps SIGTERM and SIGINT to a graceful
``engine.stop(grace)``: intake stops, running tasks get ``grace`` seconds, the
rest are cancelled and run again at the next start. (The library itself never
installs signal handlers in a user's application.)

``--app module:setup`` names a callable that receives the Engine and registers
the tasks, e.g. ``def setup(engine): engine.register("fetch", fetch)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import anyio

from ._engine import Engine
from .store._base import redact_url

log = logging.getLogger("stabilize_aio.worker")


def load_setup(spec: str) -> Callable[[Engine], Any]:
    """Import ``module:callable`` (the current directory is importable, as with ``python -m``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--app takes module:callable, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    target = getattr(importlib.import_module(module_name), attr, None)
    if not callable(target):
        raise ValueError(f"{spec!r} is not a callable in module {module_name!r}")
    return target  # type: ignore[no-any-return]


async def run_worker(url: str, app: str, grace: float, options: dict[str, Any] | None = None) -> int:
    """Run until a signal arrives, then stop gracefully; returns the exit code.

    ``options`` are Engine keywords (lease, heartbeat, poll_interval).
    """
    engine = Engine(url, **(options or {}))
    load_setup(app)(engine)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with engine:
            print(f"worker ready on {redact_url(url)} (pid {os.getpid()})", flush=True)
            async for signum in signals:
                name = signal.Signals(signum).name
                print(f"{name}: stopping, running tasks get {grace}s", flush=True)
                break
            await engine.stop(grace=grace)
    print("worker stopped", flush=True)
    return 0
