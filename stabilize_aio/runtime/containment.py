"""Containment (docs/architecture.md, rule 10): a fault local to one workflow fails that workflow.

A handler that raises, an illegal status change, an undecodable row, a write the
database refuses for its data or a turn that keeps failing its fence replaces the
actor's mailbox with one in-memory ``FailWorkflow`` turn (``handlers/control.py``)
that ends the workflow TERMINAL with a ``kind="engine"`` error, an event and an
ERROR log line. If that turn fails too, the actor gives up: nothing loops.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Sequence

from ..messages.memory import FailWorkflow, Message, Undecodable
from ..model.values import ErrorInfo, QuarantineRow

log = logging.getLogger("stabilize_aio.actor")


def engine_error(workflow_id: str, exc: BaseException, what: str) -> ErrorInfo:
    """The ``kind="engine"`` error of a fault local to a workflow (the engine failed ``what``)."""
    return ErrorInfo.engine(
        type(exc).__name__,
        f"workflow {workflow_id!r}: the engine failed {what}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
    )


def failing_turn(
    workflow_id: str,
    error: ErrorInfo,
    batch: Sequence[Message],
    mailbox: Iterable[Message],
    *,
    exc: BaseException | None = None,
    damage: tuple[QuarantineRow, ...] = (),
    repair: tuple[int, ...] = (),
) -> FailWorkflow | None:
    """The one FailWorkflow turn that replaces a workflow's mailbox and ends it TERMINAL with ``error``.

    Undecodable rows among the messages dropped (the mailbox and the turn
    ``batch`` that failed) go into the quarantine with ``damage``, so the
    purge of its outbox loses none of their bytes. When ``batch`` was itself
    a FailWorkflow turn, it returns None: the actor gives up (it leaves memory
    and its rows stay in the store, logged), so nothing loops.
    """
    if any(isinstance(m, FailWorkflow) for m in batch):
        log.error(
            "workflow %s: could not end it after a fault (%s); its rows stay in the store",
            workflow_id,
            error.message,
            extra={"workflow_id": workflow_id},
        )
        return None
    log.error("%s; it ends TERMINAL", error.message, exc_info=exc, extra={"workflow_id": workflow_id})
    kept = tuple(m.row for m in (*batch, *mailbox) if isinstance(m, Undecodable))
    return FailWorkflow(error=error, quarantine=(*damage, *kept), repair=repair)
