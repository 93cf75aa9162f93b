"""Task types: what a registration holds, and the :class:`Task` base class."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Union

import msgspec

from .._errors import RegistrationError
from ..model.plans import StageType
from ..model.reducers import BUILTIN, Reducer
from ..model.retry import RetryPolicy
from ..resilience.breaker import CircuitBreakerPolicy

if TYPE_CHECKING:
    from ..model.results import TaskResult
    from ..model.views import StageView


class Task(ABC):
    """A class-based task: implement ``execute`` (``async def`` or plain ``def``)."""

    @abstractmethod
    def execute(self, stage: StageView) -> Awaitable[TaskResult] | TaskResult:
        """Run once for a stage and return a TaskResult."""


TaskCallable = Callable[["StageView"], Union[Awaitable["TaskResult"], "TaskResult"]]


class TaskOptions(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Per task type settings, given at registration.

    Attributes:
        concurrency: the bulkhead: at most this many calls run at once.
        backlog: calls held in memory beyond that; past it, work waits in the store.
        timeout: seconds one call may take (cancelled for real; retried as transient).
        retry: the policy for transient errors and timeouts.
        poll_interval: seconds between calls of a task that returned ``running``.
        breaker: a circuit breaker policy for this task type (None: no breaker).
        compensate_unknown: a stage whose call of this type was in flight when its
            run failed or was cancelled (its outcome unknown) is compensated too.
    """

    concurrency: int = 100
    backlog: int = 10_000
    timeout: float = 300.0
    retry: RetryPolicy = RetryPolicy()
    poll_interval: float = 1.0
    breaker: CircuitBreakerPolicy | None = None
    compensate_unknown: bool = False


class TaskOptionArgs(TypedDict, total=False):
    """The keyword options of ``engine.task()`` and ``engine.register()`` (None: the TaskOptions default)."""

    concurrency: int | None
    backlog: int | None
    timeout: float | None
    retry: RetryPolicy | None
    poll_interval: float | None
    breaker: CircuitBreakerPolicy | None
    compensate_unknown: bool | None


class TaskDefinition:
    """A registered task type: its callable, whether it is sync, and its options."""

    __slots__ = ("call", "is_async", "name", "options")

    def __init__(self, name: str, call: TaskCallable, is_async: bool, options: TaskOptions) -> None:
        self.name = name
        self.call = call
        self.is_async = is_async
        self.options = options

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"<TaskDefinition {self.name!r} {kind} concurrency={self.options.concurrency}>"


def make_definition(name: str, task: Any, **options: Any) -> TaskDefinition:
    """Build a TaskDefinition from a function, a Task instance or a Task class."""
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"a task type needs a non-empty name, got {name!r}")
    try:
        opts = TaskOptions(**{k: v for k, v in options.items() if v is not None})
    except TypeError as exc:
        raise RegistrationError(f"task {name!r}: {exc}") from exc
    if opts.concurrency < 1 or opts.backlog < 0 or opts.timeout <= 0 or opts.poll_interval < 0:
        raise RegistrationError(
            f"task {name!r}: concurrency must be >= 1, backlog >= 0, timeout > 0, poll_interval >= 0"
        )
    if isinstance(task, type) and issubclass(task, Task):
        task = task()
    if isinstance(task, Task):
        call: TaskCallable = task.execute
    elif callable(task):
        call = task
    else:
        raise RegistrationError(f"task {name!r}: {task!r} is neither a callable nor a Task")
    is_async = inspect.iscoroutinefunction(call)
    return TaskDefinition(name, call, is_async, opts)


T = TypeVar("T")


def registering(add: Callable[[T], object]) -> Callable[[T], T]:
    """A decorator that registers what it decorates with ``add`` and returns it unchanged."""

    def decorate(fn: T) -> T:
        add(fn)
        return fn

    return decorate


class Registry:
    """What an engine can run: its task types, output reducers and stage types, registered before it starts."""

    __slots__ = ("_closed", "_unknown", "definitions", "reducers", "types")

    def __init__(self) -> None:
        self.definitions: dict[str, TaskDefinition] = {}
        self.reducers: dict[str, Reducer] = {}
        self.types: dict[str, StageType] = {}
        self._closed = False
        self._unknown: frozenset[str] | None = None

    def close(self) -> None:
        """The engine starts: nothing more is registered."""
        self._closed = True

    def add_task(self, name: str, task: Any, **options: Any) -> None:
        """Register task type ``name`` (RegistrationError: after start, a duplicate, bad options)."""
        if self._closed:
            raise RegistrationError(f"task {name!r}: register tasks before the engine starts")
        if name in self.definitions:
            raise RegistrationError(f"task {name!r} is already registered")
        self.definitions[name] = make_definition(name, task, **options)

    def add_reducer(self, name: str, fn: Reducer) -> None:
        """Register output reducer ``name`` (RegistrationError: after start, a duplicate or built-in name)."""
        if self._closed:
            raise RegistrationError(f"reducer {name!r}: register reducers before the engine starts")
        if name in self.reducers or name in BUILTIN:
            raise RegistrationError(f"reducer {name!r} is already registered (or built in)")
        if not isinstance(name, str) or not name or not callable(fn):
            raise RegistrationError(f"reducer {name!r}: a non-empty name and a callable `fn(values: list)`")
        self.reducers[name] = fn

    @property
    def unknown(self) -> frozenset[str]:
        """The task types registered with ``compensate_unknown``."""
        if self._unknown is None or not self._closed:
            self._unknown = frozenset(n for n, d in self.definitions.items() if d.options.compensate_unknown)
        return self._unknown

    def add_type(self, name: str, fn: StageType) -> None:
        """Register stage type ``name`` (RegistrationError: after start, a duplicate, not a callable)."""
        if self._closed:
            raise RegistrationError(f"stage type {name!r}: register stage types before the engine starts")
        if name in self.types:
            raise RegistrationError(f"stage type {name!r} is already registered")
        if not isinstance(name, str) or not name or not callable(fn):
            raise RegistrationError(f"stage type {name!r}: a non-empty name and a callable `fn(stage) -> StagePlan`")
        self.types[name] = fn
