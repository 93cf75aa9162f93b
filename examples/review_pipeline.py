"""A document review pipeline on stabilize_aio: quorum, race, loop back, sub-workflow and compensation.

::

    draft ──► review[0..2] ──► decide ──┬─► check_quick ────┐
      ▲      (2 of 3 votes)     │       └─► check_archive ──┴─► fact_checked ──► publish ──► announce
      └─────── jump_to("draft", feedback) ┘                    (first one wins)   (child run: format, store)

* ``review`` runs three reviewers (``MultiInstance(count=3, complete_after=2, cancel_remaining=True)``):
  alice and bob answer at once, carol never does; once two have voted, carol's call is cancelled.
* ``decide`` jumps back to ``draft`` with the reviewers' notes as feedback while any vote rejects the draft
  (``TaskResult.jump_to("draft", context={"feedback": ...})``); the next draft applies them.
* Two fact checkers race (``JoinType.DISCRIMINATOR``, ``cancel_remaining=True``): dana answers at once,
  erin waits on an archive that never answers and is cancelled when dana wins.
* ``publish`` is a sub-workflow (``Stage("publish", workflow=...)``): a child run formats and stores the
  document; its outputs (the document's id) are the stage's.
* ``announce`` posts to a channel. The second run posts to a channel that is down, so the run fails and
  ``publish``'s compensation (``compensate="unpublish"``) takes the document out of the store again.

The remote calls are plain async functions; nothing depends on the clock (the slow calls wait on an event
that is never set), so every run prints the same account.

Run with ``python examples/review_pipeline.py`` (it writes ``review_pipeline.db`` here).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from stabilize_aio import (
    Engine,
    JoinType,
    MultiInstance,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)

engine = Engine("sqlite:///review_pipeline.db")

#: The document store the child workflow writes to (a stand-in for a remote one): id -> formatted text.
STORE: dict[str, str] = {}
#: What happened in the calls, per run (keyed by workflow id), for the account printed after each run.
VOTES: dict[str, list[tuple[int, str, str, str]]] = {}  # (draft, reviewer, vote, note)
CANCELLED_REVIEWS: dict[str, list[int]] = {}  # the drafts whose slow reviewer's call got CancelledError
CANCELLED_CHECKS: dict[str, list[str]] = {}  # the fact checkers whose call got CancelledError
UNDONE: dict[str, list[str]] = {}
#: An event nobody sets: the slow remote calls wait on it until they are cancelled.
NEVER = anyio.Event()

REVIEWERS = ("alice", "bob", "carol")
DOWN_CHANNELS = frozenset({"status-page"})


# --- stand-ins for remote calls -------------------------------------------------------------------------


async def ask_reviewer(name: str, sections: list[str]) -> tuple[str, str]:
    """A reviewer's vote on a draft with these sections: ("approve" | "reject", note)."""
    if name == "carol":  # on holiday: never answers
        await NEVER.wait()
    wanted = {"alice": "summary", "bob": "sources"}[name]
    if wanted in sections:
        return "approve", f"{wanted} ok"
    return "reject", f"add {wanted}"


async def look_up_facts(checker: str) -> str:
    """A fact checker's verdict: dana uses a quick index, erin an archive that never answers."""
    if checker == "erin":
        await NEVER.wait()
    return "facts ok"


async def post(channel: str, doc_id: str) -> None:
    """Announce a document on a channel (raises ConnectionError if the channel is down)."""
    await anyio.lowlevel.checkpoint()
    if channel in DOWN_CHANNELS:
        raise ConnectionError(f"{channel} is down")


# --- tasks ------------------------------------------------------------------------------------------------


@engine.task("write_draft")
async def write_draft(stage: StageView) -> TaskResult:
    revision = stage.context.get("revision", 1)
    sections = ["body", *stage.context.get("feedback", [])]  # each feedback note becomes a section
    return TaskResult.success(outputs={"revision": revision, "sections": sections})


@engine.task("review")
async def review(stage: StageView) -> TaskResult:
    name = REVIEWERS[stage.context["instance_index"]]
    revision = stage.context["revision"]
    try:
        vote, note = await ask_reviewer(name, list(stage.context["sections"]))
    except anyio.get_cancelled_exc_class():
        CANCELLED_REVIEWS.setdefault(stage.workflow_id, []).append(revision)
        raise
    VOTES.setdefault(stage.workflow_id, []).append((revision, name, vote, note))
    return TaskResult.success(outputs={"reviewer": name, "vote": vote, "note": note})


@engine.task("decide")
async def decide(stage: StageView) -> TaskResult:
    votes = [v for v in stage.context["instances"] if v is not None]  # the quorum: carol's slot is None
    voters = sorted(v["reviewer"] for v in votes)
    wanted = sorted(v["note"].removeprefix("add ") for v in votes if v["vote"] == "reject")
    if wanted:
        feedback = [*stage.context.get("feedback", []), *wanted]
        return TaskResult.jump_to("draft", context={"feedback": feedback, "revision": stage.context["revision"] + 1})
    return TaskResult.success(outputs={"approved_revision": stage.context["revision"], "voters": voters})


@engine.task("fact_check")
async def fact_check(stage: StageView) -> TaskResult:
    checker = stage.context["checker"]
    try:
        verdict = await look_up_facts(checker)
    except anyio.get_cancelled_exc_class():
        CANCELLED_CHECKS.setdefault(stage.workflow_id, []).append(checker)
        raise
    return TaskResult.success(outputs={"checked_by": checker, "verdict": verdict})


@engine.task("accept_check")
async def accept_check(stage: StageView) -> TaskResult:
    return TaskResult.success(outputs={"race_winner": stage.context["checked_by"]})


@engine.task("format_doc")
async def format_doc(stage: StageView) -> TaskResult:  # in the child run: its inputs are publish's context
    body = " | ".join(s.upper() for s in stage.context["sections"])
    return TaskResult.success(outputs={"formatted": f"{stage.context['title']}: {body}"})


@engine.task("store_doc")
async def store_doc(stage: StageView) -> TaskResult:
    doc_id = f"doc-{stage.context['title'].lower().replace(' ', '-')}-r{stage.context['revision']}"
    STORE[doc_id] = stage.context["formatted"]
    return TaskResult.success(outputs={"doc_id": doc_id})


@engine.task("announce")
async def announce(stage: StageView) -> TaskResult:
    try:
        await post(stage.context["channel"], stage.context["doc_id"])
    except ConnectionError as exc:
        return TaskResult.terminal(str(exc))
    return TaskResult.success(outputs={"announced_on": stage.context["channel"]})


@engine.task("unpublish")
async def unpublish(stage: StageView) -> TaskResult:  # publish's compensation: sees publish's outputs
    doc_id = stage.context["doc_id"]
    del STORE[doc_id]
    UNDONE.setdefault(stage.workflow_id, []).append(f"{stage.ref_id}: removed {doc_id} from the store")
    return TaskResult.success(outputs={"unpublished": doc_id})


# --- the pipeline ---------------------------------------------------------------------------------------

publish_child = Workflow(
    application="review-pipeline",
    name="format-and-store",
    stages=[Stage("format", "format_doc"), Stage("store", "store_doc", requisites=["format"])],
)

pipeline = Workflow(
    application="review-pipeline",
    name="review-and-publish",
    stages=[
        Stage("draft", "write_draft"),
        Stage(
            "review",
            "review",
            requisites=["draft"],
            instances=MultiInstance(count=3, complete_after=2, cancel_remaining=True),
        ),
        Stage("decide", "decide", requisites=["review"]),
        Stage("check_quick", "fact_check", requisites=["decide"], context={"checker": "dana"}),
        Stage("check_archive", "fact_check", requisites=["decide"], context={"checker": "erin"}),
        Stage(
            "fact_checked",
            "accept_check",
            requisites=["check_quick", "check_archive"],
            join_type=JoinType.DISCRIMINATOR,
            cancel_remaining=True,
        ),
        Stage("publish", workflow=publish_child, requisites=["fact_checked"], compensate="unpublish"),
        Stage("announce", "announce", requisites=["publish"]),
    ],
    max_jumps=5,
)


def account(view: WorkflowView, child: WorkflowView) -> list[str]:
    """What happened in a run, from its view, its child's and what the calls recorded."""
    wid = view.workflow_id
    lines = []
    drafts = view.stage("draft").generation + 1  # each jump back made a new generation of the draft
    for revision in range(1, drafts + 1):
        votes = sorted(v for v in VOTES.get(wid, []) if v[0] == revision)
        said = ", ".join(f"{name} {vote}s ({note})" for _, name, vote, note in votes)
        cancelled = "carol cancelled" if revision in CANCELLED_REVIEWS.get(wid, []) else "carol not cancelled"
        lines.append(f"  draft {revision}: {said}; {cancelled}")
    votes = view.stage("review").outputs["instances"]
    quorum = [f"{v['reviewer']} {v['vote']}s" if v else f"None ({REVIEWERS[k]})" for k, v in enumerate(votes)]
    lines.append(f"  quorum on the last draft (review's outputs, in instance order): {', '.join(quorum)}")
    decide = view.stage("decide").outputs
    lines.append(
        f"  approved: draft {decide['approved_revision']} (sections {view.stage('draft').outputs['sections']}) "
        f"by {' and '.join(decide['voters'])}"
    )
    lines.append(f"  drafts until approval: {drafts} (jumps back with feedback: {view.jumps})")
    loser = view.stage("check_archive")
    lines.append(
        f"  race: {view.stage('fact_checked').outputs['race_winner']} won the fact check; "
        f"cancelled: {', '.join(CANCELLED_CHECKS.get(wid, []))} (check_archive {loser.status}, pruned={loser.pruned})"
    )
    published = view.stage("publish").outputs
    lines.append(
        f"  published: {published['doc_id']} by the child run <run>/publish.0 "
        f"({child.status}: {', '.join(s.ref_id for s in child.stages)}; "
        f"publish's outputs are the child's: {published == child.outputs})"
    )
    announce = view.stage("announce")
    detail = announce.error.message if announce.error else announce.outputs["announced_on"]
    lines.append(f"  announce: {announce.status} ({detail})")
    lines.append(f"  final status: {view.status}, compensation: {view.compensation}")
    lines.extend(f"  undone: {what}" for what in UNDONE.get(wid, []))
    lines.append(f"  store now holds: {sorted(STORE)}")
    return lines


async def run_once(label: str, context: dict[str, Any]) -> WorkflowView:
    run = await engine.submit(pipeline, context=context)
    view = await run.wait(timeout=30)
    await engine.wait_idle()  # every call has ended (the cancelled ones' except blocks included) before we print
    child = await engine.get(f"{run.workflow_id}/publish.0")
    print(f"{label}: {context['title']!r}, announced on {context['channel']}")
    for line in account(view, child):
        print(line)
    return view


async def main() -> None:
    async with engine:
        first = await run_once("Run 1", {"title": "Q3 report", "channel": "newsletter"})
        assert first.status is WorkflowStatus.SUCCEEDED
        print()
        second = await run_once("Run 2 (fails on purpose)", {"title": "Outage notes", "channel": "status-page"})
        assert second.status is WorkflowStatus.TERMINAL


if __name__ == "__main__":
    anyio.run(main)
