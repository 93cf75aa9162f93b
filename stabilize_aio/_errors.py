"""The exception tree of stabilize_aio.

Every error the engine raises derives from :class:`StabilizeError`::

    StabilizeError
    ├── DefinitionError              a workflow definition is wrong (nothing was written)
    │   ├── EmptyWorkflowError
    │   ├── DuplicateStageError
    │   ├── UnknownRequisiteError
    │   ├── CycleError
    │   ├── UnknownTaskError
    │   ├── EncodingError            a context or input msgspec cannot encode
    │   └── CronError                a schedule's cron expression cannot be parsed (also a ValueError)
    ├── ConfigurationError           an engine, store URL, retry or breaker option out of range (also a ValueError)
    ├── InvalidTransitionError       a status change the table refuses: an engine bug, contained to its workflow
    ├── InvalidIdError               a workflow id that is not 1-255 UTF-8 bytes of printable text (also a ValueError)
    ├── RegistrationError            a task registered twice, or after start
    ├── EngineStateError             misuse of the lifecycle (stopped engine, not started…)
    ├── WorkflowNotFound
    ├── StoreError                   the database (driver errors are chained with ``from``)
    │   ├── DataError                the database refused one op's data (too big, a limit): local to its workflow
    │   ├── DatabaseLockedError      another engine runs on this SQLite file
    │   ├── CorruptDatabaseError     not a database, or a damaged one
    │   ├── ForeignDatabaseError     a database that is not ours
    │   ├── SchemaTooNewError        written by a newer stabilize_aio
    │   └── ConcurrencyError         a fenced write found another version
    │       └── LeaseLostError       this process no longer holds the workflow's shard
    └── TransientError               raised by a task: retry me later

:class:`TransientError` is the one a user raises: a task that raises it is retried
with backoff. Any other exception from a task fails that task at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StabilizeError(Exception):
    """The base of every error raised by stabilize_aio."""


class DefinitionError(StabilizeError):
    """A workflow definition is invalid; the message names the stage and the problem."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class CronError(DefinitionError, ValueError):
    """A cron expression that cannot be parsed (or never fires)."""


class ConfigurationError(StabilizeError, ValueError):
    """An option the engine cannot run with: an Engine keyword, a store URL, a retry or breaker policy."""


class InvalidTransitionError(StabilizeError, ValueError):
    """A status change that the table does not allow (a bug in the engine; its workflow is failed)."""

    def __init__(self, current: Any, target: Any, what: str) -> None:
        super().__init__(f"{what}: illegal status change {current} -> {target}")
        self.current = current
        self.target = target


class EmptyWorkflowError(DefinitionError):
    """A workflow without stages."""


class DuplicateStageError(DefinitionError):
    """Two stages share a ref id."""


class UnknownRequisiteError(DefinitionError):
    """A stage depends on a ref id that no stage has (or on itself)."""


class CycleError(DefinitionError):
    """The requisites form a cycle."""


class UnknownTaskError(DefinitionError):
    """A stage names a task type that is not registered in the engine."""


class EncodingError(DefinitionError):
    """A context, input or output that msgspec cannot encode."""


class InvalidIdError(StabilizeError, ValueError):
    """A workflow (or schedule) id that is not a ``str`` of 1-255 UTF-8 bytes without NUL or control characters."""


class RegistrationError(StabilizeError):
    """A task registration is invalid (duplicate name, bad options, after start)."""


class EngineStateError(StabilizeError):
    """The engine is used outside its lifecycle (not started, stopped, restarted)."""


class RunStateError(EngineStateError):
    """A verb the run's status refuses (pause a finished run, restart an unfinished one)."""


class WorkflowExists(StabilizeError):  # noqa: N818 - the public name is fixed by the API
    """``submit(..., workflow_id=..., if_exists="reject")`` found a run with this id."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"a workflow with id {workflow_id!r} exists already (if_exists='reject')")
        self.workflow_id = workflow_id


class WorkflowNotFound(StabilizeError):  # noqa: N818 - the public name is fixed by the API
    """No workflow has this id."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}")
        self.workflow_id = workflow_id


class StoreError(StabilizeError):
    """The database failed or holds something we cannot use."""


class DataError(StoreError):
    """The database refused the data of a write (a value too big, a limit, a bad byte), not the database itself.

    The group writer replays a group that fails with it op by op: an op that
    fails alone again fails only its own workflow; the others commit.
    Busy or locked databases, serialization failures, lost connections and a
    full disk are never a DataError.
    """


class DatabaseLockedError(StoreError):
    """Another running engine holds this SQLite file."""


class CorruptDatabaseError(StoreError):
    """The file is not a readable SQLite database."""


class ForeignDatabaseError(StoreError):
    """The database holds tables that stabilize_aio did not create."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer version of stabilize_aio."""


class ConcurrencyError(StoreError):
    """A fenced write found a row at another version or a consumed row missing."""


class LeaseLostError(ConcurrencyError):
    """A turn was refused because this process no longer holds its workflow's shard lease."""

    def __init__(self, message: str, *, shards: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.shards = shards


class TransientError(StabilizeError):
    """Raised by a task to be retried later with backoff.

    Args:
        message: what went wrong.
        retry_after: seconds to wait at least before the next attempt.
        context_update: merged into the stage context before the retry (a checkpoint).
    """

    def __init__(
        self,
        message: str = "transient failure",
        *,
        retry_after: float | None = None,
        context_update: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.context_update = dict(context_update or {})
