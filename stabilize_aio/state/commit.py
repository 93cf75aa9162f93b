"""What one actor turn commits (:class:`Commit`) and what happens after it (:class:`Effects`)."""

from __future__ import annotations

import msgspec

from ..messages.durable import Durable, RunTask, Send
from ..model.records import StageRun, StageSpec, WorkflowRecord
from ..model.values import Event, QuarantineRow


class Claim(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A claim on a shared key (a global mutex, an admission slot): the first ``limit`` by insertion hold it."""

    key: str
    stage: int  # -1: the run itself (admission)
    generation: int
    limit: int = 1
    purge: bool = False  # cancel the run when a slot frees and it does not get one (keep_waiting=False)


class Commit(msgspec.Struct, kw_only=True, gc=False):
    """What one turn writes: everything the store sees, nothing else.

    Also the op of an outside command (a cancel or signal row, with ``notify``).
    """

    workflow_id: str
    workflow: WorkflowRecord | None = None
    stages: dict[int, StageRun] = {}
    base_versions: dict[int, int] = {}
    base_workflow_version: int = 0
    consumed: list[str] = []
    discarded: list[str] = []
    emitted: list[Durable] = []
    events: list[Event] = []
    notify: bool = False  # wake the process that owns this workflow's shard (written from elsewhere)
    # containment only (never on the hot path):
    purge: bool = False  # delete every outbox row of the workflow (it ended for a fault: nothing may come back)
    # (None until used: a turn allocates nothing for what it does not do)
    quarantine: list[QuarantineRow] | None = None  # undecodable rows moved to the quarantine table
    respecs: dict[int, StageSpec] | None = None  # stage definitions written back (placeholders of undecodable ones)
    # stages made at run time (a multi-instance stage's instances): inserted, their runs in ``stages``
    added: list[StageSpec] | None = None
    claims: list[Claim] | None = None  # claims on shared keys inserted (a global mutex, an admission slot)
    releases: list[int] | None = None  # the stages whose claims are deleted (-1: the run's admission)
    release_all: bool = False  # every claim of the run is deleted (it ended)

    @property
    def finished(self) -> bool:
        """Whether this commit writes the workflow with a finished status (the store notifies ``done``)."""
        return self.workflow is not None and self.workflow.status.is_complete

    @property
    def empty(self) -> bool:
        """True when nothing is written."""
        return (
            self.workflow is None
            and not self.stages
            and not self.consumed
            and not self.discarded
            and not self.emitted
            and not self.events
            and not self.purge
            and not self.quarantine
            and not self.added
            and not self.claims
            and not self.releases
            and not self.release_all
        )


class Effects(msgspec.Struct, kw_only=True, gc=False):
    """What happens after a turn's commit, and only then (never written)."""

    dispatch: list[RunTask] = []  # task calls to hand to their pools
    cancel_runs: list[str] = []  # running calls to cancel (their rows are consumed by the commit)
    finished: bool = False  # the workflow ended: wake its waiters
    sends: list[Send] | None = None  # what this run owes others (start a child, tell a parent, cancel a child)
    redeliver: bool = False  # read the run's pending rows back and deliver them (a resume)
    keys: list[str] | None = None  # shared keys whose claims changed: grant them after the commit
    freed: bool = False  # ... and one of them was released (waiting runs that asked to be purged may be)
