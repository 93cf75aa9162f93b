"""Numbered SQL migrations per dialect, read from the package."""

from __future__ import annotations

from importlib import resources


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The numbered migrations of a dialect (``sqlite``, ``postgres``) shipped with the package, in order."""
    folder = resources.files("stabilize_aio.store").joinpath("sql", dialect)
    found = [(int(f.name.split("_", 1)[0]), f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql")]
    return sorted(found)
