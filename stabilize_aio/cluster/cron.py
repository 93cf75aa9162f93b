"""Cron expressions for schedules: five fields, UTC.

``minute hour day-of-month month day-of-week`` with ``*``, values, ranges
``a-b``, lists ``a,b`` and steps ``*/n`` / ``a-b/n``; months and weekdays also
by name (``jan``, ``mon``); weekday 0 and 7 are Sunday. As in classic cron, when
both day fields are restricted a day matches if either matches.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from .._errors import CronError

_NAMES = {
    3: {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m},
    4: {d.lower(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)},  # mon=1 … sun=0
}

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))

_LABELS = ("minute", "hour", "day of month", "month", "day of week")


class Cron:
    """A parsed cron expression; :meth:`next_after` gives the next firing time."""

    __slots__ = ("days", "expression", "hours", "minutes", "months", "restricted_dom", "restricted_dow", "weekdays")

    def __init__(self, expression: str) -> None:
        parts = expression.split()
        if len(parts) != 5:
            raise CronError(f"cron {expression!r}: expected 5 fields (minute hour day month weekday), got {len(parts)}")
        sets = [_parse(part, i, expression) for i, part in enumerate(parts)]
        self.expression = expression
        self.minutes, self.hours, self.days, self.months = sets[0], sets[1], sets[2], sets[3]
        self.weekdays = frozenset(d % 7 for d in sets[4])
        self.restricted_dom = parts[2] != "*"
        self.restricted_dow = parts[4] != "*"
        self.next_after(0.0)  # refuse expressions that never fire (e.g. 30 February)

    def __repr__(self) -> str:
        return f"Cron({self.expression!r})"

    def _day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.restricted_dom and self.restricted_dow:
            return dom or dow
        return dom and dow

    def next_after(self, after: float) -> float:
        """The first firing time strictly after ``after`` (epoch seconds), at a whole minute."""
        t = datetime.fromtimestamp(after, UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t.timestamp()
        raise CronError(f"cron {self.expression!r} never fires")


def _parse(field: str, index: int, expression: str) -> frozenset[int]:
    lo, hi = _BOUNDS[index]
    values: set[int] = set()
    for item in field.lower().split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = lo, hi
            elif "-" in body:
                a, b = body.split("-", 1)
                start, end = _value(a, index), _value(b, index)
            else:
                start = _value(body, index)
                end = hi if step_text else start
        except ValueError as exc:
            raise CronError(f"cron {expression!r}: bad {_LABELS[index]} {item!r}") from exc
        if step < 1 or not lo <= start <= end <= hi:
            raise CronError(f"cron {expression!r}: {_LABELS[index]} {item!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    return names[text] if text in names else int(text)
