"""Random run control and coordination on the pure handlers keep the run's invariants (issue 12).

Random small DAGs (3-6 stages) whose stages may hold a workflow mutex, belong to a
deferred choice group, wait for a milestone on another stage, sit in a cancel
region, hold a global mutex or have a stage timeout, some runs under an admission
limit (with a start deadline) or a run timeout, are driven by a random sequence of
events, each folded as one turn by a harness like the routing tests' (it checks
the join counters three ways after every turn) that also plays the store and the
runtime: the outbox rows (emitted, consumed, discarded), the calls in flight
(dispatched, cancelled, answered) and the claims table (inserted, released, granted
by hand with ``Granted`` rows). The events: a pending call answered (success,
terminal, running, suspend with or without a timeout), a late result of a cancelled
call, a pending RunTask delivered again, pause (with and without cancel), resume,
skip, cancel_region, cancel, a stage timeout, a signal timeout, a start deadline or
a run deadline firing (from the rows and ids the state holds), a signal, a Granted
row for a claim some commit made, and restart (when finished).

After every turn:

1. no handler raises;
2. event keys are unique across the whole history (restarts included);
3. the counters of the turn, of the applied state and of a state rebuilt from the
   committed records agree;
4. a turn that leaves the run PAUSED dispatches no call;
5. a finished run holds no claim: the claims table is empty and, if the epoch made
   claims, one of its turns deleted them all (``release_all``); no turn of a finished
   run inserts one;
6. every call dispatched is a pending RunTask row after the commit;
7. two stages holding the workflow mutex are never live at once, a global-mutex
   stage is live only while it holds its key, once a deferred choice is won no
   other stage of its group is live, and a turn that leaves the run PAUSED starts
   no stage;
8. the outbox and the claims table agree with the state: every row a stage names
   is pending, every pending RunTask row is its stage's current call, the claims
   table holds exactly the stages' claims, and a finished run names no claimed key.

And after the sequence (liveness): resuming a paused run, granting the claims not
granted yet, answering every call with success, delivering every pending RunTask row
and signalling every suspended stage (nothing else fires) ends the run within 200 turns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from runs import initial_state

from stabilize_aio import RetryPolicy, Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.dag.joins import Counts
from stabilize_aio.handlers import apply, begin
from stabilize_aio.messages.durable import (
    CancelRegion,
    CancelWorkflow,
    Durable,
    Granted,
    PauseWorkflow,
    RestartWorkflow,
    ResumeWorkflow,
    RunTask,
    SignalStage,
    SignalTimeout,
    SkipStage,
    StageTimeout,
    StartDeadline,
    WorkflowTimeout,
)
from stabilize_aio.messages.memory import Message, TaskDone, TaskOutcome
from stabilize_aio.model.values import Signal
from stabilize_aio.state.commit import Claim, Commit, Effects
from stabilize_aio.state.turn import Turn
from stabilize_aio.state.workflow import WorkflowState

S = WorkflowStatus
NO_WAIT = RetryPolicy(max_attempts=3, initial=1.0, multiplier=2.0, jitter=0.0)
LIVENESS_TURNS = 200


# plans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """One stage of a random DAG: requisites (earlier stages), tasks and its coordination."""

    requisites: tuple[int, ...]
    tasks: int = 1
    mutex: bool = False  # workflow-scope mutex "m"
    choice: bool = False  # deferred choice group "g"
    milestone: int | None = None  # the index of its milestone stage
    milestone_status: str = "SUSPENDED"
    region: bool = False  # cancel region "r"
    global_mutex: bool = False  # global mutex "gm"
    stage_timeout: bool = False

    def __repr__(self) -> str:
        """Only what differs from a plain stage (examples read shorter)."""
        default = StagePlan(())
        fields = [f"{k}={v!r}" for k, v in vars(self).items() if k == "requisites" or v != vars(default)[k]]
        return f"StagePlan({', '.join(fields)})"


@dataclass(frozen=True)
class Plan:
    """A random workflow: its stages and its run options."""

    stages: tuple[StagePlan, ...]
    admission: int | None = None  # max_concurrent (None: no admission limit)
    keep_waiting: bool = True
    start_deadline: bool = False
    timeout: bool = False

    def workflow(self) -> Workflow:
        stages = []
        for k, p in enumerate(self.stages):
            options: dict[str, Any] = {}
            if p.global_mutex:
                options.update(mutex_key="gm", mutex_scope="global")
            elif p.mutex:
                options.update(mutex_key="m")
            if p.choice:
                options["deferred_choice_group"] = "g"
            if p.milestone is not None:
                options.update(milestone_ref_id=f"s{p.milestone}", milestone_status=p.milestone_status)
            if p.region:
                options["cancel_region"] = "r"
            if p.stage_timeout:
                options["stage_timeout"] = 50.0
            stages.append(Stage(f"s{k}", tasks=["t"] * p.tasks, requisites=[f"s{r}" for r in p.requisites], **options))
        admission: dict[str, Any] = {}
        if self.admission is not None:
            admission.update(concurrency_key="etl", max_concurrent=self.admission, keep_waiting=self.keep_waiting)
            if self.start_deadline:
                admission["start_deadline"] = 60.0
        return Workflow(
            application="app", name="wf", stages=stages, timeout=3600.0 if self.timeout else None, **admission
        )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(3, 6))
    global_at = draw(st.one_of(st.none(), st.integers(0, n - 1)))
    stages = []
    for k in range(n):
        reqs = tuple(sorted(draw(st.sets(st.integers(0, k - 1), max_size=min(k, 2))))) if k else ()
        milestone = None
        if draw(st.integers(0, 4)) == 0:
            milestone = draw(st.sampled_from([m for m in range(n) if m != k]))
        stages.append(
            StagePlan(
                requisites=reqs,
                tasks=draw(st.sampled_from((1, 1, 2))),
                mutex=draw(st.integers(0, 2)) == 0,
                choice=draw(st.integers(0, 2)) == 0,
                milestone=milestone,
                milestone_status=draw(st.sampled_from(("SUSPENDED", "RUNNING", "SUCCEEDED"))),
                region=draw(st.integers(0, 2)) == 0,
                global_mutex=global_at == k,
                stage_timeout=draw(st.integers(0, 3)) == 0,
            )
        )
    admitted = draw(st.booleans())
    return Plan(
        stages=tuple(s if s.milestone is not None else StagePlan(**{**vars(s), "milestone_status": "SUSPENDED"})
                     for s in stages),
        admission=draw(st.sampled_from((1, 2))) if admitted else None,
        keep_waiting=draw(st.booleans()) if admitted else True,
        start_deadline=admitted and draw(st.booleans()),
        timeout=draw(st.integers(0, 3)) == 0,
    )  # fmt: skip


#: The events of the random sequence; the number with each picks among the candidates the state offers.
KINDS = (
    "success",
    "success",
    "terminal",
    "running",
    "suspend",
    "late",
    "redeliver",
    "pause",
    "resume",
    "skip",
    "region",
    "cancel",
    "stage_timeout",
    "signal_timeout",
    "start_deadline",
    "workflow_timeout",
    "signal",
    "grant",
    "restart",
    "restart",
    "pause",
    "resume",
    "drive",
)
Event = tuple[str, int]
events_strategy = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 63)), min_size=4, max_size=40)


# the harness ---------------------------------------------------------------------------


def counts(state: WorkflowState) -> tuple[list[Counts], int]:
    """Every stage's join counts and the live stages, as ``state`` has them."""
    return [
        Counts(
            len(state.specs[i].requisites),
            state.outstanding[i],
            state.dead[i],
            state.halted[i],
            state.runs[i].fired,
            len(state.runs[i].arrivals),
        )
        for i in range(len(state.specs))
    ], state.active


@dataclass
class ClaimRow:
    claim: Claim
    granted: bool = False


@dataclass
class Step:
    message: Message | None
    commit: Commit
    effects: Effects
    before: WorkflowStatus
    after: WorkflowStatus


@dataclass
class World:
    """The pure handlers with a fake store and runtime around them: outbox, calls in flight, claims."""

    state: WorkflowState
    now: float = 1000.0
    log: list[Step] = field(default_factory=list)
    rows: dict[str, Durable] = field(default_factory=dict)  # the outbox
    calls: dict[str, RunTask] = field(default_factory=dict)  # dispatched, not answered, not cancelled
    cancelled: dict[str, RunTask] = field(default_factory=dict)  # calls cancelled (a late result may come)
    claims: list[ClaimRow] = field(default_factory=list)  # the claims table (insertion order)
    claimed_ever: list[Claim] = field(default_factory=list)
    epoch_claimed: bool = False  # the current epoch inserted claims
    epoch_released_all: bool = False  # ... and a turn of it deleted them all
    seq: int = 0

    # turns ------------------------------------------------------------------------------
    def _turn(self, message: Message | None, fold: Callable[[Turn], None]) -> Step:
        before = self.state.record.status
        epoch = self.state.record.epoch
        turn = Turn(self.state, self.now)
        fold(turn)  # (1) whatever a handler raises escapes here
        overlay = [turn.counts(i) for i in range(len(self.state.specs))], turn.active
        commit, effects = turn.commit, turn.effects
        self.state.apply(commit)
        st_ = self.state
        rebuilt = WorkflowState(st_.record, list(st_.specs), list(st_.runs))
        assert counts(rebuilt) == counts(st_), "(3) apply(commit) left counters a rebuilt state does not have"
        assert counts(rebuilt) == overlay, "(3) the turn decided from counts the committed state does not have"
        step = Step(message, commit, effects, before, st_.record.status)
        self.log.append(step)
        self._store(commit, effects, epoch)
        self._check(step)
        self.now += 1.0
        return step

    def _store(self, commit: Commit, effects: Effects, epoch: int) -> None:
        if commit.purge:
            self.rows.clear()
        for rid in (*commit.consumed, *commit.discarded):
            self.rows.pop(rid, None)
        for m in commit.emitted:
            self.rows[m.id] = m
        if self.state.record.epoch != epoch:  # a restart: a new epoch of claims
            self.epoch_claimed = False
            self.epoch_released_all = False
        if commit.releases:
            gone = set(commit.releases)
            self.claims = [c for c in self.claims if c.claim.stage not in gone]
        if commit.release_all:
            self.claims = []
            self.epoch_released_all = True
        for c in commit.claims or ():
            self.claims.append(ClaimRow(c))
            self.claimed_ever.append(c)
            self.epoch_claimed = True
        for rid in effects.cancel_runs:
            run = self.calls.pop(rid, None)
            if run is not None:
                self.cancelled[rid] = run
        for run in effects.dispatch:
            self.calls[run.id] = run  # (a redelivery of a call already made is the same call)

    def _check(self, step: Step) -> None:
        keys = [e.key for s in self.log for e in s.commit.events]
        assert len(keys) == len(set(keys)), (
            f"(2) duplicate event keys: {sorted({k for k in keys if keys.count(k) > 1})}"
        )
        if step.after is S.PAUSED:
            assert step.effects.dispatch == [], f"(4) a turn of a PAUSED run dispatched {step.effects.dispatch}"
        record = self.state.record
        if record.status.is_complete:
            assert self.claims == [], f"(5) the run is {record.status.value} and still has claims {self.claims}"
            if self.epoch_claimed:
                assert self.epoch_released_all, "(5) a finished run's claims were never deleted (release_all)"
            if step.before.is_complete:
                assert not step.commit.claims, f"(5) a turn of a finished run inserted claims {step.commit.claims}"
        for run in step.effects.dispatch:
            assert self.rows.get(run.id) == run, f"(6) dispatched {run} is not a pending RunTask row"
        self._check_coordination(step)
        self._check_rows()

    def _check_rows(self) -> None:
        """(8) the outbox and the claims table say what the state says."""
        runs = self.state.runs
        for i, r in enumerate(runs):
            for rid in (r.run_id, r.timer_id, r.wait_id):
                assert rid is None or rid in self.rows, f"(8) stage {i} names row {rid!r}, which is not pending"
        for m in self.rows.values():
            if isinstance(m, RunTask):
                assert runs[m.stage].run_id == m.id, f"(8) RunTask row {m.id!r} is not its stage's current call"
        stage_claims = sorted((c.claim.stage, c.claim.generation) for c in self.claims if c.claim.stage >= 0)
        held = sorted((i, r.generation) for i, r in enumerate(runs) if r.claim)
        assert stage_claims == held, f"(8) the claims table has {stage_claims}, the stages claim {held}"
        if self.state.record.status.is_complete:
            assert self.state.record.claimed == (), "(8) a finished run still names claimed keys"

    def _check_coordination(self, step: Step) -> None:
        """(7) mutexes exclude, a deferred choice has one live member once chosen, a PAUSED run starts nothing."""
        specs, runs = self.state.specs, self.state.runs
        live = [i for i, r in enumerate(runs) if r.status in (S.RUNNING, S.SUSPENDED)]
        coords = {i: c for i in live if (c := specs[i].coord) is not None}
        holders = [specs[i].ref_id for i, c in coords.items() if c.mutex_key == "m"]
        assert len(holders) <= 1, f"(7) stages {holders} hold the workflow mutex at once"
        for i in live:
            c = specs[i].coord
            if c is not None and c.mutex_scope == "global":
                assert runs[i].claim == 2, f"(7) {specs[i].ref_id!r} runs without holding its global mutex"
        winner = self.state.record.chosen.get("g")
        if winner is not None:
            others = [specs[i].ref_id for i, c in coords.items() if i != winner and c.choice == "g"]
            assert not others, f"(7) {others} still live after {specs[winner].ref_id!r} won the deferred choice"
        if step.after is S.PAUSED:
            started = [e.stage for e in step.commit.events if e.kind == "stage.started"]
            assert not started, f"(7) stages {started} started in a turn that left the run PAUSED"

    def start(self) -> Step:
        return self._turn(None, begin)

    def send(self, message: Message) -> Step:
        return self._turn(message, lambda turn: apply(turn, message))

    def answer(self, run: RunTask, result: TaskResult) -> Step:
        self.calls.pop(run.id, None)
        self.cancelled.pop(run.id, None)
        return self.send(TaskDone(run=run, outcome=TaskOutcome(result=result, retry=NO_WAIT, poll_interval=5.0)))

    def next_id(self, kind: str) -> str:
        self.seq += 1
        return f"{kind}:{self.seq}"

    # what the state offers ----------------------------------------------------------------
    def pending_runs(self) -> list[RunTask]:
        """RunTask rows not in flight (polls, retries, rows kept by a pause): a timer or a resume delivers them."""
        return [m for m in self.rows.values() if isinstance(m, RunTask) and m.id not in self.calls]

    def ungranted(self) -> list[Claim]:
        return [c.claim for c in self.claims if not c.granted]

    def grant(self, claim: Claim) -> Step:
        for row in self.claims:
            if row.claim == claim:
                row.granted = True
        g = Granted(id=f"grant:{claim.stage}:{claim.generation}", key=claim.key, stage=claim.stage,
                    generation=claim.generation)  # fmt: skip
        return self.send(g)


def pick(items: list[Any], n: int) -> Any:
    return items[n % len(items)] if items else None


def play(w: World, event: Event) -> None:
    """Fold one event as one turn (an event the state offers nothing for does nothing)."""
    kind, n = event
    st_ = w.state
    size = len(st_.specs)
    record = st_.record
    calls = sorted(w.calls.values(), key=lambda r: r.id)
    if kind in ("success", "terminal", "running", "suspend"):
        call = pick(calls, n)
        if call is None:
            return
        if kind == "success":
            result = TaskResult.success(outputs={"n": n})
        elif kind == "terminal":
            result = TaskResult.terminal("boom")
        elif kind == "running":
            result = TaskResult.running()
        else:
            on_timeout = ("fail", "skip", "continue")[n % 3]
            result = TaskResult.suspend(timeout=None if n % 4 == 3 else 30.0, on_timeout=on_timeout)
        w.answer(call, result)
    elif kind == "late":
        call = pick(sorted(w.cancelled.values(), key=lambda r: r.id), n)
        if call is not None:
            w.answer(call, TaskResult.success())
    elif kind == "redeliver":
        row = pick(sorted((m for m in w.rows.values() if isinstance(m, RunTask)), key=lambda r: r.id), n)
        if row is not None:
            w.send(row)
    elif kind == "pause":
        w.send(PauseWorkflow(id=w.next_id("pause"), reason="ops", cancel=n % 2 == 1))
    elif kind == "resume":
        w.send(ResumeWorkflow(id=w.next_id("resume")))
    elif kind == "skip":
        w.send(SkipStage(id=w.next_id("skip"), stage=n % size))
    elif kind == "region":
        w.send(CancelRegion(id=w.next_id("region"), region="r"))
    elif kind == "cancel":
        w.send(CancelWorkflow(id=w.next_id("cancel"), reason="stop"))
    elif kind == "stage_timeout":
        timed = [(i, r) for i, r in enumerate(st_.runs) if r.timer_id is not None]
        hit = pick(timed, n)
        if hit is not None:
            i, r = hit
            assert r.timer_id is not None
            w.send(StageTimeout(id=r.timer_id, stage=i, generation=r.generation))
    elif kind == "signal_timeout":
        row = pick(sorted((m for m in w.rows.values() if isinstance(m, SignalTimeout)), key=lambda r: r.id), n)
        if row is not None:
            w.send(row)
    elif kind == "start_deadline":
        if record.start_deadline is not None:
            w.send(StartDeadline(id=f"start_deadline:{record.epoch}"))
    elif kind == "workflow_timeout":
        if record.timeout is not None:
            w.send(WorkflowTimeout(id=f"deadline:{record.epoch}"))
    elif kind == "signal":
        w.send(SignalStage(id=w.next_id("signal"), stage=n % size, signal=Signal(name="go")))
    elif kind == "grant":
        table = [c.claim for c in w.claims]
        claim = pick(table, n) if table and n % 4 else pick(w.claimed_ever, n)
        if claim is not None:
            w.grant(claim)
    elif kind == "drive":  # the run goes to its end the liveness way (so that restarts have finished runs)
        drive_to_the_end(w)
    elif kind == "restart":
        if not record.status.is_complete:
            return  # refused at the door: only a finished run restarts
        stage = -1 if n % 2 == 0 else (n // 2) % size
        if stage < 0 and record.status is S.SUCCEEDED:
            stage = (n // 2) % size  # the door refuses restart(stage=None) of a SUCCEEDED run
        w.send(RestartWorkflow(id=f"restart:{record.epoch}", stage=stage, epoch=record.epoch))
    else:  # pragma: no cover - KINDS lists every kind
        raise AssertionError(kind)


def drive_to_the_end(w: World) -> None:
    """Liveness: resume, grant, answer with success, deliver pending rows, signal suspended stages; nothing else."""
    for _ in range(LIVENESS_TURNS):
        record = w.state.record
        if record.status.is_complete:
            return
        if record.status is S.PAUSED:
            w.send(ResumeWorkflow(id=w.next_id("resume")))
            continue
        claims = w.ungranted()
        if claims:
            w.grant(claims[0])
            continue
        if w.calls:
            w.answer(min(w.calls.values(), key=lambda r: r.id), TaskResult.success())
            continue
        rows = w.pending_runs()
        if rows:
            w.send(min(rows, key=lambda r: r.id))
            continue
        suspended = [i for i, r in enumerate(w.state.runs) if r.status is S.SUSPENDED]
        if suspended:
            w.send(SignalStage(id=w.next_id("signal"), stage=suspended[0], signal=Signal(name="go")))
            continue
        stages = {s.ref_id: r.status.value for s, r in zip(w.state.specs, w.state.runs, strict=True)}
        raise AssertionError(f"(6) the run is stuck {record.status.value}: nothing to answer; stages {stages}, "
                             f"waits {record.waits}, deferred {record.deferred}, rows {sorted(w.rows)}")  # fmt: skip
    raise AssertionError(f"(6) the run did not finish within {LIVENESS_TURNS} turns: {w.state.record.status.value}")


def run_plan(plan: Plan, events: list[Event]) -> World:
    w = World(initial_state(plan.workflow(), "wf-1", {}))
    w.start()
    for one in events:
        play(w, one)
    drive_to_the_end(w)
    assert w.state.record.status.is_complete
    return w


#: Found by this property (engine bug, open): no event at all. s0 waits for its milestone s2; the start turn's
#: ending settle skips it ("never reached"), so s1 (milestone s2, mutex m) and s2 (mutex m) become ready, s1 first;
#: s2 then queues for m behind s1, which waits for s2's milestone, not for m; the last settle skips s1 but starts
#: no one, and the run stays RUNNING with s2 waiting for a free key, nothing live and no row (coordination.settle).
STUCK_BEHIND_A_MILESTONE_WAITER = Plan(
    stages=(StagePlan((), milestone=2), StagePlan((0,), mutex=True, milestone=2), StagePlan((0,), mutex=True))
)


@settings(max_examples=300, deadline=None, derandomize=True)
@example(STUCK_BEHIND_A_MILESTONE_WAITER, [])
@given(plans(), events_strategy)
def test_run_control_keeps_the_invariants_and_every_run_can_finish(plan: Plan, events: list[Event]) -> None:
    w = run_plan(plan, events)
    event(f"ended {w.state.record.status.value}")
    event(f"epochs {min(w.state.record.epoch, 2)}")
    steps = [s.message for s in w.log]
    for kind in (PauseWorkflow, Granted, SignalTimeout, SkipStage, CancelRegion, StageTimeout):
        if any(isinstance(m, kind) for m in steps):
            event(f"has {kind.__name__}")
    if any(s.after is S.PAUSED for s in w.log):
        event("was paused")
    if w.claimed_ever:
        event("made claims")
