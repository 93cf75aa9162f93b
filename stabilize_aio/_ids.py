"""Workflow ids: what a caller may give, what the engine draws and derives.

A workflow id is a ``str`` of 1 to :data:`MAX_ID_BYTES` UTF-8 bytes with no NUL
or other control character. That fits every backend's keys, indexes and
notification payloads (PostgreSQL's ``pg_notify`` takes under 8,000 bytes; a
btree index row about 2,700), so nothing the engine sends for a workflow can
exceed a limit. Ids the engine derives (a schedule's tick runs, later child
runs) go through :func:`derive`, which keeps them readable and hashes what
would not fit.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from ._clock import SYSTEM_CLOCK, Clock
from ._errors import InvalidIdError

#: The longest id, in UTF-8 bytes.
MAX_ID_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_id(value: Any, *, what: str = "workflow id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdError` saying why."""
    if not isinstance(value, str):
        raise InvalidIdError(f"a {what} must be a str, not {type(value).__name__} ({value!r})")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidIdError(f"{what} {value[:40]!r}… is not valid UTF-8 text: {exc.reason}") from None
    if not 1 <= size <= MAX_ID_BYTES:
        shown = value if size <= 60 else value[:40] + "…"
        raise InvalidIdError(f"{what} {shown!r} is {size} UTF-8 bytes; it must be 1 to {MAX_ID_BYTES}")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InvalidIdError(
            f"{what} {value[:60]!r} contains the control character {bad.group()!r} at {bad.start()}; "
            "ids are printable text"
        )
    return value


def derive(*parts: str, sep: str = ":") -> str:
    """An id made of ``parts`` joined by ``sep``; when that would not fit, its head and a hash of the whole.

    The same parts always give the same id, so a derived run (a schedule tick)
    is never started twice. Control characters are replaced by ``?``.
    """
    whole = _CONTROL.sub("?", sep.join(parts))
    if len(whole.encode("utf-8")) <= MAX_ID_BYTES:
        return whole
    digest = hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    head = whole.encode("utf-8", "surrogatepass")[: MAX_ID_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def new_id(*, clock: Clock = SYSTEM_CLOCK) -> str:
    """A sortable unique id: milliseconds of ``clock.time()`` then randomness (ULID-like, hex)."""
    return f"{int(clock.time() * 1000):012x}{secrets.token_hex(8)}"
