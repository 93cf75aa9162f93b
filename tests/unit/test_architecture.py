"""The import rule of docs/architecture.md, enforced: layers import only downwards.

Every module of the package is parsed (imports inside functions and under
``TYPE_CHECKING`` count too); each import of another part of the package is
checked against the layer table below, which is the table in
docs/architecture.md ("The import rule").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stabilize_aio"

#: Layer of each part of the package, lowest first. A module may import its own
#: layer and any lower one, never a higher one. (Folders later issues add take
#: their place here: ``events`` beside ``store``, ``patterns`` beside ``dag``,
#: ``tasks`` and ``compat`` with the doors.)
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"_errors", "_ids", "_faults", "_clock", "_codec", "_config"}),
    frozenset({"model"}),
    frozenset({"dag", "patterns"}),
    frozenset({"messages"}),
    frozenset({"state"}),
    frozenset({"handlers"}),
    frozenset({"resilience"}),
    frozenset({"pool"}),
    frozenset({"store", "events"}),
    frozenset({"cluster"}),
    frozenset({"runtime"}),
    frozenset({"_engine", "_control", "_lifecycle", "_run"}),
    frozenset({"__init__", "__main__", "cli", "testing", "tasks", "compat"}),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
CORE = LAYERS[0]
#: What each lower part may import besides itself (docs/architecture.md, "The house", its last column);
#: the parts not listed (cluster and above) may import every lower layer.
ALLOWED: dict[str, frozenset[str]] = {
    **dict.fromkeys(CORE, CORE),
    "model": CORE,
    "dag": CORE | {"model"},
    "patterns": CORE | {"model", "dag"},
    "messages": CORE | {"model"},
    "state": CORE | {"model", "dag", "messages"},
    "handlers": CORE | {"model", "dag", "messages", "state"},
    "resilience": CORE,
    "pool": CORE | {"model", "messages", "resilience"},
    "store": CORE | {"model", "messages", "state"},
    "events": CORE | {"model", "messages", "state", "store"},
}
#: The pure layers: rules without I/O, clocks or concurrency.
PURE = ("model", "dag", "messages", "state", "handlers")
DRIVERS = ("aiosqlite", "asyncpg", "sqlite3", "psycopg", "psycopg2")
#: Only these folders may import a database driver.
DRIVER_HOMES = (("store", "sqlite"), ("store", "postgres"))


def modules() -> list[tuple[tuple[str, ...], Path]]:
    """(dotted parts under the package, path) of every module."""
    out: list[tuple[tuple[str, ...], Path]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out.append((parts, path))
    return out


def imports(parts: tuple[str, ...], path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in a module (package-relative names start with ``.``)."""
    package = list(parts[:-1])  # a module's package (an __init__'s is its own folder)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
                names = [module] if module != "stabilize_aio" else [f"stabilize_aio.{a.name}" for a in node.names]
                found.extend((node.lineno, name) for name in names)
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None:  # from . import x: x is a module (or a name) of that package
                found.extend((node.lineno, "." + ".".join([*target, a.name])) for a in node.names)
            else:
                found.append((node.lineno, "." + ".".join(target)))
    return found


def part_of(dotted: tuple[str, ...]) -> str:
    """The layer key of a module: its top-level folder or module name under the package."""
    return dotted[0] if dotted else "__init__"


def package_target(name: str) -> tuple[str, ...] | None:
    """The package-relative parts an import names, or None if it is not the package's."""
    if name.startswith("."):
        return tuple(p for p in name[1:].split(".") if p)
    if name == "stabilize_aio" or name.startswith("stabilize_aio."):
        return tuple(name.split(".")[1:])
    return None


def test_every_part_of_the_package_has_a_layer() -> None:
    """Each top-level module and folder of the package is placed in the layer table."""
    unplaced = sorted({part_of(parts) for parts, _ in modules()} - set(RANK))
    assert [] == unplaced


def test_the_lower_parts_import_only_what_the_house_table_allows() -> None:
    """Below the cluster, each part imports only the parts its row of the table names (not just any lower layer)."""
    outside = []
    for parts, path in modules():
        here = part_of(parts)
        if here not in ALLOWED:
            continue
        for line, name in imports(parts, path):
            target = package_target(name)
            if target is None:
                continue
            there = part_of(target)
            if there != here and there not in ALLOWED[here]:
                outside.append(f"{'/'.join(parts)}.py:{line} imports {there}")
    assert [] == outside


def test_every_import_of_the_package_names_a_placed_part() -> None:
    """An import of the package names a module or folder the layer table places (none slips past the rule)."""
    unknown = []
    for parts, path in modules():
        for line, name in imports(parts, path):
            target = package_target(name)
            if target is not None and part_of(target) not in RANK:
                unknown.append(f"{'/'.join(parts)}.py:{line} imports {name}")
    assert [] == unknown


def test_no_layer_imports_a_higher_one() -> None:
    """A module imports only its own layer and lower ones (docs/architecture.md, the import rule)."""
    upward = []
    for parts, path in modules():
        here = part_of(parts)
        for line, name in imports(parts, path):
            target = package_target(name)
            if target is None:
                continue
            there = part_of(target)
            if there in RANK and RANK[there] > RANK[here]:
                upward.append(f"{'/'.join(parts)}.py:{line} imports {there} (layer {RANK[there]} > {RANK[here]})")
    assert [] == upward


@pytest.mark.parametrize("layer", PURE)
def test_pure_layers_do_no_io_and_keep_no_time(layer: str) -> None:
    """The rules (model, dag, messages, state, handlers) import no anyio, no store, no clock, no randomness."""
    banned = (
        "anyio",
        "asyncio",
        "time",
        "datetime",
        "random",
        "secrets",
        "socket",
        "os",
        "threading",
        "uuid",
        *DRIVERS,
    )
    offenders = []
    for parts, path in modules():
        if part_of(parts) != layer:
            continue
        for line, name in imports(parts, path):
            if name.split(".")[0] in banned:
                offenders.append(f"{'/'.join(parts)}.py:{line} imports {name}")
    assert [] == offenders


def test_handlers_import_nothing_outside_the_package_but_typing_and_msgspec() -> None:
    """The rules' outside imports are a whitelist: typing, collections, functools, msgspec (no os, no I/O)."""
    allowed = {"__future__", "typing", "collections", "functools", "msgspec"}
    offenders = []
    for parts, path in modules():
        if part_of(parts) != "handlers":
            continue
        for line, name in imports(parts, path):
            if package_target(name) is None and name.split(".")[0] not in allowed:
                offenders.append(f"{'/'.join(parts)}.py:{line} imports {name}")
    assert [] == offenders


def test_only_the_store_backends_import_a_database_driver() -> None:
    """aiosqlite, asyncpg and sqlite3 are imported only under store/sqlite/ and store/postgres/."""
    offenders = []
    for parts, path in modules():
        if parts[:2] in DRIVER_HOMES:
            continue
        for line, name in imports(parts, path):
            if name.split(".")[0] in DRIVERS:
                offenders.append(f"{'/'.join(parts)}.py:{line} imports {name}")
    assert [] == offenders


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a model module importing the runtime is reported (so the rule can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..runtime.parts import Runtime\nimport anyio\n")
    found = imports(("model", "bad"), bad)
    assert [(1, ".runtime.parts"), (2, "anyio")] == found
    target = package_target(found[0][1])
    assert target is not None
    assert RANK[part_of(target)] > RANK["model"]


def test_modules_stay_small() -> None:
    """No module over 500 lines, the median at most 250, and the Engine facade at most 350."""
    sizes = {"/".join(parts): len(path.read_text().splitlines()) for parts, path in modules()}
    over = {name: n for name, n in sizes.items() if n > 500}
    counted = sorted(n for name, n in sizes.items() if not name.endswith("__init__"))
    assert {} == over
    assert counted[len(counted) // 2] <= 250
    assert sizes["_engine"] <= 350
