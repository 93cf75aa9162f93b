"""The condition language: what parses, what is refused at the door, and how it evaluates (never guessing)."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize_aio import DefinitionError
from stabilize_aio.model.conditions import ConditionError, parse

CTX: dict[str, Any] = {
    "score": 0.9,
    "dry_run": False,
    "customer": {"tier": "gold", "tags": ["a", "b"], "address": {"city": "Oslo"}},
    "scores": {"fast": 3, "slow": 1},
    "items": [10, 20, 30],
    "name": "x",
    "done": True,
    "none": None,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("score > 0.8", True),
        ("score <= 0.8", False),
        ("customer.tier == 'gold' and not dry_run", True),
        ("customer.address.city == 'Oslo'", True),
        ('scores["fast"] > scores["slow"]', True),
        ("items[0] == 10 and items[-1] == 30", True),
        ("'a' in customer.tags", True),
        ("'z' not in customer.tags", True),
        ("name in ['x', 'y']", True),
        ("0 < score < 1", True),
        ("1 < score < 2", False),
        ("-score < 0", True),
        ("done == true and none == null", True),
        ("dry_run or done", True),
        ("not done", False),
        ("true", True),
    ],
)
def test_expressions_evaluate_over_the_context(source: str, expected: bool) -> None:
    """Literals, names, a.b and a[k], comparisons (chained), in, and/or/not and unary minus give booleans."""
    assert expected is parse(source, stage="s").evaluate(CTX)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("open('/etc/passwd')", "a call"),
        ("customer.tier.upper() == 'GOLD'", "a call"),
        ("[x for x in items]", "ListComp"),
        ("lambda: 1", "Lambda"),
        ("score + 1 > 2", "BinOp"),
        ("customer.__class__ == 1", "no name starting with _"),
        ("a if b else c", "IfExp"),
        ("score >", "does not parse"),
        ("", "non-empty"),
        ("x is None", "Is"),
        ("{'a': 1} == x", "Dict"),
    ],
)
def test_what_the_language_does_not_allow_is_refused_when_parsed(source: str, problem: str) -> None:
    """Calls, arithmetic, comprehensions, private names and bad syntax fail at parse time, naming the stage."""
    with pytest.raises(ConditionError, match=problem) as caught:
        parse(source, stage="route")
    assert isinstance(caught.value, DefinitionError)
    assert "route" == caught.value.stage
    assert "stage 'route'" in str(caught.value)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("missing == 1", "names 'missing', which is not in the context"),
        ("customer.plan == 'x'", "'plan' is not there"),
        ("items[5] == 1", "the list has 3 items"),
        ("score > 'high'", "cannot be compared"),
        ("not name", "applies 'not' to str"),
        ("name and done", "applies 'and' to str"),
        ("score", "is float 0.9, not true or false"),
        ("name.first == 'x'", "from str"),
        ("-name == 1", "not a number"),
    ],
)
def test_an_expression_that_cannot_be_evaluated_raises_instead_of_guessing(source: str, problem: str) -> None:
    """A missing name or key, a bad comparison or a non-boolean is a ConditionError, never a silent true/false."""
    condition = parse(source, stage="notify")
    with pytest.raises(ConditionError, match=problem) as caught:
        condition.evaluate(CTX)
    assert "notify" == caught.value.stage


def test_and_or_short_circuit_as_written() -> None:
    """``false and <missing>`` is false and ``true or <missing>`` true: the missing name is never read."""
    assert parse("dry_run and missing == 1").evaluate(CTX) is False
    assert parse("done or missing == 1").evaluate(CTX) is True


def test_a_condition_says_which_names_it_reads() -> None:
    """``names`` lists the context names an expression reads (literals are not names)."""
    assert (
        frozenset({"customer", "dry_run", "score"})
        == parse("customer.tier == 'gold' and not dry_run and score > 0 and true").names
    )
