"""The named queries of each dialect: loaded once from the package, each written once, every one used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import stabilize_aio
from stabilize_aio.store.queries import parse, queries

PACKAGE = Path(stabilize_aio.__file__).parent
DIALECTS = ("sqlite", "postgres")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_query_of_a_dialect_is_used_by_its_store_by_name(dialect: str) -> None:
    """Each named query is used by name somewhere in the store; none is left over, none is missing."""
    named = queries(f"stabilize_aio.store.{dialect}")
    code = "\n".join(p.read_text() for p in (PACKAGE / "store" / dialect).glob("*.py"))
    code += (PACKAGE / "store" / "rows.py").read_text()  # the batches' query names
    code += (PACKAGE / "store" / "queries.py").read_text()  # the listings' query names
    code += (PACKAGE / "store" / "claims.py").read_text()  # the names the claims' grant runs
    unused = {name for name in named if not re.search(rf"""["']{name}["']""", code)}
    used = set(re.findall(r"""SQL\[["']([a-z_]+)["']\]""", code))
    assert (set(), set()) == (unused, used - set(named))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_stores_write_no_sql_inline(dialect: str) -> None:
    """No statement is spelled in the store's code: every one comes from queries.sql."""
    statement = re.compile(r"""["'](SELECT|INSERT|UPDATE|DELETE|BEGIN|COMMIT|ROLLBACK|PRAGMA|WITH|CREATE)\b""")
    found = {
        (p.name, m.group(1))
        for p in (PACKAGE / "store" / dialect).glob("*.py")
        for m in statement.finditer(p.read_text())
    }
    assert set() == found


def test_queries_are_loaded_once_into_a_frozen_mapping() -> None:
    """The same mapping every time, and it cannot be changed."""
    first = queries("stabilize_aio.store.sqlite")
    assert first is queries("stabilize_aio.store.sqlite")
    with pytest.raises(TypeError):
        first["load"] = "DELETE FROM workflows"  # type: ignore[index]


def test_a_query_is_its_lines_under_its_header_without_comments() -> None:
    """Comment lines and a trailing semicolon are left out; the statement keeps its lines."""
    text = "-- about the file\n\n-- name: one\n-- why\nSELECT 1\nFROM t;\n\n-- name: two\nSELECT 2\n"
    assert {"one": "SELECT 1\nFROM t", "two": "SELECT 2"} == dict(parse(text))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "named twice"),
        ("-- name: a\nSELECT 1\n-- name: b\nSELECT 1\n", "the same statement"),
        ("SELECT 1\n-- name: a\nSELECT 2\n", "before the first"),
        ("-- name: a\n-- nothing\n", "empty"),
    ],
)
def test_a_query_file_that_says_a_thing_twice_or_nothing_is_refused(text: str, says: str) -> None:
    """A name twice, a statement twice, a statement without a name, a name without a statement."""
    with pytest.raises(ValueError, match=says):
        parse(text)
