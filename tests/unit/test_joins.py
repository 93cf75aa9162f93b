"""The join policies' decisions, from the counts alone (dag/joins.py)."""

from __future__ import annotations

import pytest

from stabilize_aio import JoinType, Stage, Workflow
from stabilize_aio.dag.compile import compile_workflow
from stabilize_aio.dag.joins import Counts, Decision, decide
from stabilize_aio.model.records import StageSpec

W, GO, PRUNE, NO, CLOSE = Decision.WAIT, Decision.START, Decision.PRUNE, Decision.UNREACHABLE, Decision.CLOSE


def spec(join: JoinType, threshold: int | None = None, n: int = 3) -> StageSpec:
    ups = [Stage(f"u{k}", "t") for k in range(n)]
    j = Stage("j", "t", requisites=[u.ref_id for u in ups], join_type=join, join_threshold=threshold)
    _, specs = compile_workflow(Workflow(application="a", name="n", stages=[*ups, j]), {})
    return specs[-1]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (Counts(3, 3, 0, 0), W),
        (Counts(3, 1, 0, 0), W),
        (Counts(3, 0, 0, 0), GO),
        (Counts(3, 0, 1, 0), GO),  # a dead edge is not waited for
        (Counts(3, 0, 3, 0), PRUNE),  # every edge dead: pruned in turn
        (Counts(3, 1, 0, 1), W),  # a halted requisite: the stage never starts (today's AND)
    ],
)
@pytest.mark.parametrize("join", [JoinType.AND, JoinType.OR])
def test_and_and_or(join: JoinType, counts: Counts, expected: Decision) -> None:
    assert decide(spec(join), counts) is expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (Counts(3, 3, 0, 0), W),
        (Counts(3, 2, 0, 0), GO),  # the first arrival
        (Counts(3, 2, 0, 2), GO),
        (Counts(3, 3, 0, 2), W),  # one may still arrive
        (Counts(3, 3, 0, 3), NO),  # all halted
        (Counts(3, 1, 2, 1), NO),  # two dead, one halted: nothing can arrive
        (Counts(3, 0, 3, 0), PRUNE),
    ],
)
def test_discriminator(counts: Counts, expected: Decision) -> None:
    assert decide(spec(JoinType.DISCRIMINATOR), counts) is expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (Counts(3, 2, 0, 0), W),  # one of two
        (Counts(3, 1, 0, 0), GO),  # the second arrival
        (Counts(3, 2, 0, 1), W),  # one arrived, one halted, one may arrive
        (Counts(3, 3, 0, 2), NO),  # two halted: at most one can arrive
        (Counts(3, 1, 1, 1), NO),  # one arrived, one dead, one halted
        (Counts(3, 1, 2, 0), PRUNE),  # dead edges only: pruned, not failed
    ],
)
def test_n_of_m(counts: Counts, expected: Decision) -> None:
    assert decide(spec(JoinType.N_OF_M, 2), counts) is expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (Counts(3, 3, 0, 0, fired=0, merges=0), W),
        (Counts(3, 2, 0, 0, fired=0, merges=1), GO),  # each arrival one run
        (Counts(3, 2, 0, 0, fired=1, merges=1), W),  # that arrival's run started already
        (Counts(3, 1, 0, 0, fired=1, merges=2), GO),
        (Counts(3, 1, 0, 1, fired=2, merges=2), CLOSE),  # nothing more can arrive: it ends as its last run
        (Counts(3, 1, 0, 0, fired=0, merges=0), W),  # reset by a jump: arrivals before it are spent
        (Counts(3, 0, 3, 0, fired=0, merges=0), PRUNE),
    ],
)
def test_multi_merge(counts: Counts, expected: Decision) -> None:
    assert decide(spec(JoinType.MULTI_MERGE), counts) is expected
