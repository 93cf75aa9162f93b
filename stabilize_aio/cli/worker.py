"""``stabilize-aio worker``: run an engine as a process of its own until SIGTERM or SIGINT.

This entry point owns its process, so it maps SIGTERM and SIGINT to a graceful
``engine.stop(grace)``: intake stops, running tasks get ``grace`` seconds, the
rest are cancelled and run again at the next start. (The library itself never
installs signal handlers in a user's application.)

``--app module:setup`` names a callable that receives the Engine and registers
the tasks, e.g. ``def setup(engine): engine.register("fetch", fetch)`` (an
``async def`` setup is awaited). One it cannot load or that raises is one
``error:`` line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import anyio

from .._engine import Engine
from .._errors import StabilizeError
from ..store.url import redact_url

log = logging.getLogger("stabilize_aio.worker")


class AppError(StabilizeError):
    """``--app`` names nothing the worker can run: the message says what is wrong, in one line."""


def load_setup(spec: str) -> Callable[[Engine], Any]:
    """Import ``module:callable`` (the current directory is importable, as with ``python -m``).

    Raises ``AppError`` naming the problem: not ``module:callable``, no such module, the module
    raising on import, no such attribute, or an attribute that is not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise AppError(f"--app takes module:callable (e.g. myapp.tasks:setup), not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise AppError(
                f"--app {spec!r}: no module named {exc.name!r} (searched the current directory and sys.path)"
            ) from None
        raise AppError(f"--app {spec!r}: importing {module_name!r} raised {_one_line(exc)}") from None
    except Exception as exc:  # the user's module failed at import: say so without a traceback
        raise AppError(f"--app {spec!r}: importing {module_name!r} raised {_one_line(exc)}") from None
    if not hasattr(module, attr):
        raise AppError(f"--app {spec!r}: module {module_name!r} has no attribute {attr!r}")
    target = getattr(module, attr)
    if not callable(target):
        raise AppError(f"--app {spec!r}: {attr!r} is not callable (it is of type {type(target).__name__})")
    return target  # type: ignore[no-any-return]


def _one_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _set_up(app: str, setup: Callable[[Engine], Any], engine: Engine) -> None:
    """Call ``--app``'s setup with the engine (awaited if it is ``async def``)."""
    try:
        returned = setup(engine)
        if inspect.isawaitable(returned):
            await returned
    except Exception as exc:  # the user's setup failed: say so without a traceback
        raise AppError(f"--app {app!r}: the setup raised {_one_line(exc)}") from None


async def run_worker(url: str, app: str, grace: float, options: dict[str, Any] | None = None) -> int:
    """Run until a signal arrives, then stop gracefully; returns the exit code.

    ``options`` are Engine keywords (lease, heartbeat, poll_interval). A URL the
    engine refuses or an ``--app`` it cannot load is one line on stderr and exit
    code 2, before anything is opened.
    """
    try:
        setup = load_setup(app)
        engine = Engine(url, **(options or {}))
        await _set_up(app, setup, engine)
    except (AppError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
