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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..messages.memory import FailWorkflow, Message, Undecodable
from ..model.values import ErrorInfo, QuarantineRow

if TYPE_CHECKING:
    from .actor import WorkflowActor

log = logging.getLogger("stabilize_aio.actor")


def contain(actor: WorkflowActor, exc: BaseException, what: str, batch: Sequence[Message]) -> bool:
    """A fault local to this workflow while ``batch`` was its turn: fail the workflow (see :func:`fail`)."""
    error = ErrorInfo.engine(
        type(exc).__name__,
        f"workflow {actor.workflow_id!r}: the engine failed {what}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
    )
    return fail(actor, error, batch, exc=exc)


def fail(
    actor: WorkflowActor,
    error: ErrorInfo,
    batch: Sequence[Message],
    *,
    exc: BaseException | None = None,
    damage: tuple[QuarantineRow, ...] = (),
    repair: tuple[int, ...] = (),
) -> bool:
    """Replace the actor's mailbox with one FailWorkflow turn that ends the workflow TERMINAL with ``error``.

    Undecodable rows among the messages dropped (the mailbox and the turn
    ``batch`` that failed) go into the quarantine with ``damage``, so the
    purge of its outbox loses none of their bytes. When ``batch`` was itself
    a FailWorkflow turn, the actor gives up instead and returns False: it
    leaves memory and its rows stay in the store (logged), so nothing loops.
    """
    wid = actor.workflow_id
    if any(isinstance(m, FailWorkflow) for m in batch):
        log.error(
            "workflow %s: could not end it after a fault (%s); its rows stay in the store",
            wid,
            error.message,
            extra={"workflow_id": wid},
        )
        actor.forget()
        return False
    log.error("%s; it ends TERMINAL", error.message, exc_info=exc, extra={"workflow_id": wid})
    kept = tuple(m.row for m in (*batch, *actor.mailbox) if isinstance(m, Undecodable))
    actor.failures = 0
    actor.mailbox.clear()
    actor.ids.clear()
    actor.mailbox.append(FailWorkflow(error=error, quarantine=(*damage, *kept), repair=repair))
    return True
