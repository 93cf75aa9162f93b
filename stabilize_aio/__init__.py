"""stabilize_aio: durable DAG workflows for asyncio, on embedded SQLite or PostgreSQL.

This module only re-exports the public API; implementation lives in private modules.
"""

from __future__ import annotations

from ._engine import Engine as Engine
from ._errors import ConcurrencyError as ConcurrencyError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import CorruptDatabaseError as CorruptDatabaseError
from ._errors import CronError as CronError
from ._errors import CycleError as CycleError
from ._errors import DatabaseLockedError as DatabaseLockedError
from ._errors import DataError as DataError
from ._errors import DefinitionError as DefinitionError
from ._errors import DuplicateStageError as DuplicateStageError
from ._errors import EmptyWorkflowError as EmptyWorkflowError
from ._errors import EncodingError as EncodingError
from ._errors import EngineStateError as EngineStateError
from ._errors import ForeignDatabaseError as ForeignDatabaseError
from ._errors import InvalidIdError as InvalidIdError
from ._errors import InvalidTransitionError as InvalidTransitionError
from ._errors import LeaseLostError as LeaseLostError
from ._errors import RegistrationError as RegistrationError
from ._errors import RunStateError as RunStateError
from ._errors import SchemaTooNewError as SchemaTooNewError
from ._errors import StabilizeError as StabilizeError
from ._errors import StoreError as StoreError
from ._errors import TransientError as TransientError
from ._errors import UnknownRequisiteError as UnknownRequisiteError
from ._errors import UnknownTaskError as UnknownTaskError
from ._errors import WorkflowExists as WorkflowExists
from ._errors import WorkflowNotFound as WorkflowNotFound
from ._run import WorkflowRun as WorkflowRun
from .cluster.schedules import ScheduleInfo as ScheduleInfo
from .model.definitions import Stage as Stage
from .model.definitions import Workflow as Workflow
from .model.instances import MultiInstance as MultiInstance
from .model.plans import StagePlan as StagePlan
from .model.results import TaskResult as TaskResult
from .model.retry import RetryPolicy as RetryPolicy
from .model.routing import JoinType as JoinType
from .model.routing import SplitType as SplitType
from .model.status import WorkflowStatus as WorkflowStatus
from .model.values import ErrorInfo as ErrorInfo
from .model.values import Event as Event
from .model.views import InstanceInfo as InstanceInfo
from .model.views import StageInfo as StageInfo
from .model.views import StageView as StageView
from .model.views import WorkflowSummary as WorkflowSummary
from .model.views import WorkflowView as WorkflowView
from .pool.registry import Task as Task
from .pool.registry import TaskOptions as TaskOptions
from .resilience.breaker import CircuitBreakerPolicy as CircuitBreakerPolicy
from .resilience.breaker import CircuitState as CircuitState
from .runtime.statistics import EngineStatistics as EngineStatistics

__version__ = "0.1.0"

__all__ = (
    # engine
    "Engine",
    "EngineStatistics",
    "ScheduleInfo",
    "WorkflowRun",
    # definitions
    "Workflow",
    "Stage",
    "Task",
    "TaskOptions",
    "TaskResult",
    "StagePlan",
    "MultiInstance",
    "JoinType",
    "SplitType",
    "RetryPolicy",
    "CircuitBreakerPolicy",
    "CircuitState",
    "WorkflowStatus",
    # views
    "StageView",
    "StageInfo",
    "InstanceInfo",
    "WorkflowView",
    "WorkflowSummary",
    "ErrorInfo",
    "Event",
    # errors
    "StabilizeError",
    "DefinitionError",
    "EmptyWorkflowError",
    "DuplicateStageError",
    "UnknownRequisiteError",
    "CycleError",
    "UnknownTaskError",
    "EncodingError",
    "CronError",
    "InvalidTransitionError",
    "ConfigurationError",
    "InvalidIdError",
    "RegistrationError",
    "EngineStateError",
    "WorkflowNotFound",
    "WorkflowExists",
    "RunStateError",
    "StoreError",
    "DataError",
    "DatabaseLockedError",
    "CorruptDatabaseError",
    "ForeignDatabaseError",
    "SchemaTooNewError",
    "ConcurrencyError",
    "LeaseLostError",
    "TransientError",
)
