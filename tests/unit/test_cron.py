"""Cron expressions: parsing and the next firing time (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stabilize_aio import CronError, DefinitionError
from stabilize_aio.cluster.cron import Cron


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2026-11-24 10:15:30", "2026-11-24 10:16"),
        ("*/15 * * * *", "2026-11-24 10:15:00", "2026-11-24 10:30"),
        ("0 3 * * *", "2026-11-24 03:00:00", "2026-11-25 03:00"),
        ("30 9 * * mon-fri", "2026-11-27 10:00:00", "2026-11-30 09:30"),  # Friday after 9:30 -> Monday
        ("0 0 1 jan *", "2026-06-01 00:00:00", "2027-01-01 00:00"),
        ("0 12 29 feb *", "2026-03-01 00:00:00", "2028-02-29 12:00"),  # the next leap day
        ("0 0 13 * 5", "2026-11-24 00:00:00", "2026-11-27 00:00"),  # day 13 OR a Friday: the Friday comes first
        ("5,10-12/2 * * * 7", "2026-11-29 08:06:00", "2026-11-29 08:10"),  # 7 is Sunday
    ],
)
def test_next_after(expression: str, after: str, expected: str) -> None:
    """next_after returns the first matching whole minute strictly after the given time."""
    assert expected == iso(Cron(expression).next_after(at(after)))


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("* 24 * * *", "outside 0-23"),
        ("*/0 * * * *", "outside"),
        ("* * * foo *", "bad month"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_expressions_are_refused(expression: str, problem: str) -> None:
    """A malformed or impossible expression raises CronError naming the problem."""
    with pytest.raises(CronError, match=problem):
        Cron(expression)


def test_a_bad_cron_is_a_definition_error() -> None:
    """CronError is a DefinitionError (and so a StabilizeError), and still a ValueError."""
    with pytest.raises(DefinitionError, match="expected 5 fields") as caught:
        Cron("* *")
    assert isinstance(caught.value, CronError)
    assert isinstance(caught.value, ValueError)
