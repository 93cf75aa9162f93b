"""postgres: see docs/architecture.md."""
