"""Named queries: one ``queries.sql`` per dialect, each statement under a ``-- name: <name>`` header.

A file is read once from the package into a frozen mapping. Full-line ``--``
comments (what a query does and why) stay in the file; the statements are
sent without them. A name given twice, or a statement written twice under two
names, is refused when the file is loaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


@functools.cache
def queries(package: str) -> Mapping[str, str]:
    """The named queries of ``package``'s ``queries.sql`` (e.g. ``stabilize_aio.store.sqlite``), read once."""
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    return parse(text, where=f"{package}/queries.sql")


def parse(text: str, *, where: str = "queries.sql") -> Mapping[str, str]:
    """``{name: statement}`` from the text of a queries file.

    Raises:
        ValueError: text before the first header, a name twice, an empty query, or one statement under two names.
    """
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line.strip())
        if header is not None:
            name = header.group(1)
            if name in found:
                raise ValueError(f"{where}:{number}: query {name!r} is named twice")
            current = found[name] = []
        elif line.strip().startswith("--") or not line.strip():
            continue
        elif current is None:
            raise ValueError(f"{where}:{number}: a statement before the first '-- name:' header")
        else:
            current.append(line.rstrip())
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, lines in found.items():
        statement = "\n".join(lines).strip().removesuffix(";").rstrip()
        if not statement:
            raise ValueError(f"{where}: query {name!r} is empty")
        if statement in seen:
            raise ValueError(f"{where}: queries {seen[statement]!r} and {name!r} are the same statement")
        seen[statement] = name
        out[name] = statement
    return MappingProxyType(out)


#: The listing query of each filter, (by status, by application): one statement each, so each uses its index.
_LISTINGS = {
    (False, False): "workflows_newest",
    (True, False): "workflows_newest_by_status",
    (False, True): "workflows_newest_by_application",
    (True, True): "workflows_newest_by_status_and_application",
}


def listing(status: str | None, application: str | None) -> str:
    """The name of the query listing workflows newest first with these filters (those not None)."""
    return _LISTINGS[status is not None, application is not None]
