"""Output reducers: how a join stage combines its upstreams' outputs, per key.

``Stage(..., requisites=["x", "y"], output_reducers={"rows": "extend", "n": "sum"})``:
when the stage starts, each listed key's values are taken from the outputs of
its requisites that have the key, in ``requisites`` order, and reduced to one
value; that value is what the stage's tasks (and its ``enabled`` condition)
see for the key. A key no requisite produced is left as it is. Built in:

``collect``  the values as a list        ``extend``  lists concatenated
``sum``      numbers added               ``max`` / ``min``  the largest / smallest
``merge``    mappings merged (later wins)  ``first`` / ``last``  the first / last value

Others are registered on the engine (``@engine.reducer("top3")``, a function
``values: list -> value``). A reducer that raises, or is given values it
cannot combine, fails the stage with a ``ReducerError`` naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._errors import DefinitionError

Reducer = Callable[[list[Any]], Any]


class ReducerError(DefinitionError):
    """An unknown reducer (at the door), or values a reducer cannot combine (when the stage starts)."""


def _extend(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if not isinstance(value, list | tuple):
            raise TypeError(f"extend takes lists, got {type(value).__name__} {value!r}")
        out.extend(value)
    return out


def _merge(values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in values:
        if not isinstance(value, Mapping):
            raise TypeError(f"merge takes mappings, got {type(value).__name__} {value!r}")
        out.update(value)
    return out


def _sum(values: list[Any]) -> Any:
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise TypeError(f"sum takes numbers, got {values!r}")
    return sum(values)


BUILTIN: Mapping[str, Reducer] = {
    "collect": list,
    "extend": _extend,
    "sum": _sum,
    "max": max,
    "min": min,
    "merge": _merge,
    "first": lambda values: values[0],
    "last": lambda values: values[-1],
}


def reduce_outputs(
    stage: str,
    reducers: Mapping[str, str],
    upstream_outputs: Sequence[Mapping[str, Any]],
    registered: Mapping[str, Reducer],
) -> dict[str, Any]:
    """The reduced value of each key (only keys some upstream produced), upstreams in ``requisites`` order.

    Raises:
        ReducerError: a reducer that is not known or raises, naming the stage and the key.
    """
    out: dict[str, Any] = {}
    for key, name in reducers.items():
        values = [outputs[key] for outputs in upstream_outputs if key in outputs]
        if not values:
            continue
        fn = registered.get(name) or BUILTIN.get(name)
        if fn is None:
            raise ReducerError(f"stage {stage!r}: output reducer {name!r} for {key!r} is not registered", stage=stage)
        try:
            out[key] = fn(values)
        except Exception as exc:
            raise ReducerError(
                f"stage {stage!r}: output reducer {name!r} for {key!r} failed on {values!r}: {exc!r}", stage=stage
            ) from exc
    return out
