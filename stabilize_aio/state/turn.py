"""A turn: an overlay on a WorkflowState through which handlers read and write."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec

from ..dag.joins import Counts
from ..messages.durable import Durable, RunTask, Send
from ..model.events import EventKind
from ..model.records import LIVE, StageRun, StageSpec, WorkflowRecord, set_stage_status, set_workflow_status
from ..model.reducers import BUILTIN, Reducer
from ..model.status import WorkflowStatus
from ..model.values import Event, QuarantineRow
from .commit import Claim, Commit, Effects
from .workflow import PER_CHILD, Weights, WorkflowState, child_shift, shift

_PAUSED = WorkflowStatus.PAUSED


class Turn:
    """An overlay on a WorkflowState through which handlers read and write.

    Handlers change a turn only through its verbs; what they amount to is
    :attr:`commit` (what the store sees) and :attr:`effects` (what happens after it).
    """

    __slots__ = (
        "_active",
        "_dead",
        "_halted",
        "_outstanding",
        "_record",
        "_runs",
        "commit",
        "effects",
        "holds",
        "now",
        "reducers",
        "state",
    )

    def __init__(self, state: WorkflowState, now: float, reducers: Mapping[str, Reducer] = BUILTIN) -> None:
        self.state = state
        self.now = now
        #: The output reducers a join stage may name: the built-in ones and the engine's registered ones.
        self.reducers = reducers
        self.commit = Commit(workflow_id=state.record.id)
        self.effects = Effects()
        self._runs: dict[int, StageRun] = {}
        self._record: WorkflowRecord | None = None
        # a stage's counts as this turn changed them (outstanding, dead and halted requisites):
        self._outstanding: dict[int, int] = {}
        self._dead: dict[int, int] | None = None  # (made when a pattern first needs them)
        self._halted: dict[int, int] | None = None
        self._active = state.active
        #: Open loops over stages about to start (the start turn's roots, a stage's children): while one is
        #: open, the run does not complete (a stage about to start would start in a finished run).
        self.holds = 0

    # reads -----------------------------------------------------------------
    @property
    def record(self) -> WorkflowRecord:
        return self._record if self._record is not None else self.state.record

    def run(self, i: int) -> StageRun:
        r = self._runs.get(i)
        return r if r is not None else self.state.runs[i]

    def spec(self, i: int) -> StageSpec:
        try:
            return self.state.specs[i]
        except IndexError:  # a stage made in this turn (an instance)
            added = self.commit.added
            if added is None:
                raise
            return added[i - len(self.state.specs)]

    def stage_context(self, i: int) -> dict[str, Any]:
        """Stage ``i``'s context as this turn sees it (ancestors ended in this turn included)."""
        return self.state.stage_context(i, self.run)

    def outstanding(self, i: int) -> int:
        """How many of stage ``i``'s requisites have not ended in a status that can continue, in this turn."""
        v = self._outstanding.get(i)
        if v is not None:
            return v
        try:
            return self.state.outstanding[i]
        except IndexError:  # a stage made in this turn: no requisites
            return 0

    def dead(self, i: int) -> int:
        """How many edges into stage ``i`` are dead, in this turn."""
        v = None if self._dead is None else self._dead.get(i)
        if v is not None:
            return v
        return self.state.dead[i] if i < len(self.state.dead) else 0

    def counts(self, i: int) -> Counts:
        """Stage ``i``'s requisites as counted in this turn (what its join policy decides from)."""
        st = self.state
        run = self.run(i)
        halted = None if self._halted is None else self._halted.get(i)
        if halted is None:
            halted = st.halted[i] if i < len(st.halted) else 0
        return Counts(
            len(self.spec(i).requisites),
            self.outstanding(i),
            self.dead(i),
            halted,
            run.fired,
            len(run.arrivals),
        )

    @property
    def active(self) -> int:
        return self._active

    def runs(self) -> Iterator[tuple[int, StageRun]]:
        for i in range(self.size):
            yield i, self.run(i)

    @property
    def size(self) -> int:
        """How many stages the run has in this turn (those made in it included)."""
        added = self.commit.added
        return len(self.state.specs) + (len(added) if added is not None else 0)

    def next_done(self) -> int:
        """The next place in the order compensable stages succeeded (a scan, only in a turn that needs one)."""
        return 1 + max((run.done_seq for _, run in self.runs()), default=0)

    def add_stage(self, spec: StageSpec, *, generation: int = 0) -> StageRun:
        """Make a stage at run time (``spec.index`` must be :attr:`size`): inserted NOT_STARTED with this turn.

        ``generation``: its first generation (an instance takes its stage's, so a rerun's keys are new).
        """
        if spec.index != self.size or spec.requisites:
            raise ValueError(f"a stage made at run time is appended, without requisites: {spec.ref_id!r}")
        run = StageRun(generation=generation)
        if self.commit.added is None:
            self.commit.added = []
        self.commit.added.append(spec)
        self._runs[spec.index] = run
        self.commit.stages[spec.index] = run
        self.commit.base_versions[spec.index] = 0
        return run

    # writes ----------------------------------------------------------------
    def set_stage(self, i: int, target: WorkflowStatus, *, reset: bool = False, **changes: Any) -> StageRun:
        old = self.run(i)
        new = set_stage_status(self.spec(i), old, target, reset=reset, version=old.version + 1, **changes)
        self._put(i, old, new)
        return new

    def update_stage(self, i: int, **changes: Any) -> StageRun:
        """Change a stage's other fields (never its status)."""
        old = self.run(i)
        new = msgspec.structs.replace(old, version=old.version + 1, **changes)
        self._put(i, old, new)
        return new

    def _put(self, i: int, old: StageRun, new: StageRun) -> None:
        if old.status in LIVE and new.status not in LIVE:
            self._active -= 1
        elif new.status in LIVE and old.status not in LIVE:
            self._active += 1
        if (
            old.status is not new.status
            or old.pruned is not new.pruned
            or old.dropped is not new.dropped
            or old.merging is not new.merging
        ):
            d = shift(old, new)
            if d is not None:
                self._shift(i, old, new, d)
        self._runs[i] = new
        commit = self.commit
        if i not in commit.base_versions:
            commit.base_versions[i] = self.state.runs[i].version
        commit.stages[i] = new

    def _shift(self, i: int, old: StageRun, new: StageRun, d: Weights) -> None:
        """Move stage ``i``'s children's counts in this turn by ``d`` (what its change does to its edges)."""
        st = self.state
        for c in st.children[i] if i < len(st.children) else ():  # (a stage made in this turn has none)
            out, dead, halted = child_shift(old, new, c) if d is PER_CHILD else d
            if out:
                self._outstanding[c] = self.outstanding(c) + out
            if dead:
                changed = self._dead = {} if self._dead is None else self._dead
                v = changed.get(c)
                changed[c] = (st.dead[c] if v is None else v) + dead
            if halted:
                changed = self._halted = {} if self._halted is None else self._halted
                v = changed.get(c)
                changed[c] = (st.halted[c] if v is None else v) + halted

    def set_workflow(self, target: WorkflowStatus, *, fail: bool = False, reset: bool = False, **changes: Any) -> None:
        old = self.record
        self._record = set_workflow_status(old, target, fail=fail, reset=reset, version=old.version + 1, **changes)
        self.commit.base_workflow_version = self.state.record.version
        self.commit.workflow = self._record

    def update_workflow(self, **changes: Any) -> None:
        """Change the run's other fields (never its status)."""
        self.set_workflow(self.record.status, **changes)

    def record_event(
        self,
        kind: EventKind,
        key: str,
        *,
        stage: int | None = None,
        status: WorkflowStatus | None = None,
        message: str | None = None,
        attempt: int | None = None,
        at: float | None = None,
    ) -> None:
        """Append a history event (a kind of the catalogue, ``model/events.py``) to this turn.

        ``attempt`` defaults to the stage's, ``at`` to the turn's time.
        """
        if attempt is None and stage is not None:
            attempt = self.run(stage).attempt
        self.commit.events.append(
            Event(
                key=key,
                kind=kind,
                at=self.now if at is None else at,
                stage=self.spec(stage).ref_id if stage is not None else None,
                status=status._value_ if status is not None else None,
                attempt=attempt,
                message=message,
            )
        )

    def consume(self, message_id: str) -> None:
        """Delete a row in this turn; a row emitted in this same turn is simply not written."""
        emitted = self.commit.emitted
        for k, m in enumerate(emitted):
            if m.id == message_id:
                del emitted[k]
                self.effects.dispatch = [d for d in self.effects.dispatch if d.id != message_id]
                return
        self.commit.consumed.append(message_id)

    def drop(self, message_id: str) -> None:
        """Delete a row if it is there: one this turn emitted is not written, another is discarded (no fence)."""
        if any(m.id == message_id for m in self.commit.emitted):
            self.consume(message_id)
        else:
            self.discard(message_id)

    def discard(self, message_id: str) -> None:
        """Delete a row that may already be gone (a late or repeated command): no fence."""
        self.commit.discarded.append(message_id)

    def emit(self, message: Durable) -> None:
        """Write a row in this turn; a RunTask due now is also dispatched after the commit (unless PAUSED)."""
        self.commit.emitted.append(message)
        if isinstance(message, RunTask) and message.deliver_at is None:
            record = self._record if self._record is not None else self.state.record
            if record.status is not _PAUSED:
                self.effects.dispatch.append(message)

    def send(self, message: Send) -> None:
        """Owe another run something (a row in this turn; done after the commit, then the row deleted)."""
        self.commit.emitted.append(message)
        self.resend(message)

    def resend(self, message: Send) -> None:
        """Do a pending Send row again after the commit (a redelivery: it is still owed)."""
        if self.effects.sends is None:
            self.effects.sends = []
        self.effects.sends.append(message)

    def dispatch(self, run: RunTask) -> None:
        """Hand a pending RunTask (already a row) to its pool after the commit."""
        self.effects.dispatch.append(run)

    def drop_dispatches(self) -> None:
        """Start none of the calls this turn queued so far (their rows stay: a resume delivers them again)."""
        self.effects.dispatch.clear()

    def drop_emitted(self) -> None:
        """Forget every row this turn emitted so far, and their dispatches (nothing of them runs)."""
        self.commit.emitted.clear()
        self.effects.dispatch.clear()

    def cancel_call(self, run_id: str) -> None:
        """Cancel a running call after the commit (its result, if any, is then stale)."""
        self.effects.cancel_runs.append(run_id)

    def redeliver(self) -> None:
        """After the commit, read the run's pending rows back and deliver them (a resume: its calls go again)."""
        self.effects.redeliver = True

    def claim(self, claim: Claim) -> None:
        """Insert a claim on a shared key in this turn; after the commit, the key's first claims are granted."""
        if self.commit.claims is None:
            self.commit.claims = []
        self.commit.claims.append(claim)
        self._touch(claim.key)

    def release(self, stage: int, key: str) -> None:
        """Delete stage ``stage``'s claims (-1: the run's admission) in this turn; the key is granted again after."""
        claims = self.commit.claims
        if claims:  # a claim of this turn goes with it (the insert would come after the delete)
            self.commit.claims = [c for c in claims if c.stage != stage] or None
        if self.commit.releases is None:
            self.commit.releases = []
        self.commit.releases.append(stage)
        self._touch(key)
        self.effects.freed = True

    def release_all(self, keys: Iterable[str]) -> None:
        """Delete every claim of the run in this turn (it ends); ``keys`` are granted again after the commit."""
        self.commit.release_all = True
        self.commit.claims = None  # (claims of this turn too: they would be inserted after the delete)
        for key in keys:
            self._touch(key)
        self.effects.freed = True

    def _touch(self, key: str) -> None:
        keys = self.effects.keys
        if keys is None:
            keys = self.effects.keys = []
        if key not in keys:
            keys.append(key)

    def finish(self) -> None:
        """The workflow ends in this turn: its waiters are woken after the commit."""
        self.effects.finished = True

    # containment -------------------------------------------------------------
    def purge(self, quarantine: Iterable[QuarantineRow] = ()) -> None:
        """Delete every outbox row of the workflow; move ``quarantine`` rows to the quarantine table."""
        self.commit.purge = True
        rows = [msgspec.structs.replace(row, at=self.now) for row in quarantine]
        if rows:
            self.commit.quarantine = [*(self.commit.quarantine or ()), *rows]

    def respec(self, i: int) -> None:
        """Write stage ``i``'s definition and run row back as loaded (placeholders made decodable)."""
        if self.commit.respecs is None:
            self.commit.respecs = {}
        self.commit.respecs[i] = self.spec(i)
        self.update_stage(i)
