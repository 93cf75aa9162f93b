"""Structured loops built from ordinary stages: :func:`while_loop` and :func:`repeat_until`.

Each returns the stages to splice into a :class:`~stabilize_aio.Workflow`:
``<prefix>/enter``, the body (copies of the given stages; those with no
requisite inside the body run after ``enter``) and the exit stage, whose ref id
is ``prefix`` — what stages after the loop list as their requisite. Each
iteration the body sees ``iteration`` (1-based) and the values the last
iteration's body output; the exit stage's outputs are the body's last outputs
plus ``loop = {"iterations": n, "exit": "condition" | "max_iterations"}``.
The loop runs on jumps (each iteration a new generation of its stages, so new
idempotency keys) that do not count toward the workflow's ``max_jumps``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Literal

from ._errors import DefinitionError
from .model.conditions import parse
from .model.definitions import Stage
from .model.routing import LoopSpec

__all__ = ("repeat_until", "while_loop")

OnMax = Literal["fail", "continue"]


def while_loop(
    prefix: str,
    condition: str,
    *,
    body: Sequence[Stage],
    requisites: Iterable[str] = (),
    max_iterations: int = 100,
    on_max: OnMax = "fail",
) -> list[Stage]:
    """A loop that asks ``condition`` before each iteration and runs ``body`` while it holds.

    The condition sees the context of the stage before the body: the loop's
    requisites' outputs, the values carried from the last iteration and
    ``iteration``. False at the first ask: the body never runs (its stages end
    SKIPPED) and the loop ends at once. After ``max_iterations`` runs of the
    body with the condition still true, ``on_max="fail"`` fails the exit stage
    (a ``LoopError``), ``"continue"`` leaves the loop normally.
    """
    return _loop(
        "while",
        prefix,
        condition=condition,
        body=body,
        requisites=requisites,
        max_iterations=max_iterations,
        on_max=on_max,
    )


def repeat_until(
    prefix: str,
    condition: str,
    *,
    body: Sequence[Stage],
    requisites: Iterable[str] = (),
    max_iterations: int = 100,
    on_max: OnMax = "fail",
) -> list[Stage]:
    """A loop that runs ``body`` first and asks ``condition`` after each run, until it holds.

    The condition sees the exit stage's context: the body's outputs of this
    iteration (and everything before) and ``iteration``. After
    ``max_iterations`` runs with the condition still false, ``on_max`` decides
    as in :func:`while_loop`.
    """
    return _loop(
        "until",
        prefix,
        condition=condition,
        body=body,
        requisites=requisites,
        max_iterations=max_iterations,
        on_max=on_max,
    )


def _loop(
    kind: Literal["while", "until"],
    prefix: str,
    /,
    *,
    condition: str,
    body: Sequence[Stage],
    requisites: Iterable[str],
    max_iterations: int,
    on_max: OnMax,
) -> list[Stage]:
    enter_ref = f"{prefix}/enter"
    if isinstance(requisites, str):
        requisites = (requisites,)
    enter = Stage(enter_ref, requisites=requisites)  # checks the prefix as a ref id
    parse(condition, stage=prefix, what="loop condition")
    if not isinstance(max_iterations, int) or isinstance(max_iterations, bool) or max_iterations < 1:
        raise DefinitionError(
            f"loop {prefix!r}: max_iterations must be an int >= 1, got {max_iterations!r}", stage=prefix
        )
    if on_max not in ("fail", "continue"):
        raise DefinitionError(f"loop {prefix!r}: on_max must be 'fail' or 'continue', got {on_max!r}", stage=prefix)
    stages = list(body)
    if not stages or not all(isinstance(s, Stage) for s in stages):
        raise DefinitionError(f"loop {prefix!r}: body must be a non-empty list of Stage", stage=prefix)
    refs = [s.ref_id for s in stages]
    if prefix in refs or enter_ref in refs:
        raise DefinitionError(f"loop {prefix!r}: a body stage uses the loop's own ref id", stage=prefix)
    inside = set(refs)
    copies: list[Stage] = []
    for s in stages:
        c = copy.copy(s)
        if not any(r in inside for r in s.requisites):
            c.requisites = (*s.requisites, enter_ref)
        copies.append(c)
    fed = {r for s in stages for r in s.requisites if r in inside}
    leaves = [r for r in refs if r not in fed]
    exit_stage = Stage(prefix, requisites=leaves)
    spec = {"kind": kind, "condition": condition, "max_iterations": max_iterations, "on_max": on_max}
    enter.loop = LoopSpec(role="enter", partner=prefix, **spec)  # type: ignore[arg-type]
    exit_stage.loop = LoopSpec(role="exit", partner=enter_ref, body=tuple(refs), **spec)  # type: ignore[arg-type]
    return [enter, *copies, exit_stage]
