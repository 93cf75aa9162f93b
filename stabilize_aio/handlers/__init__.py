"""handlers: see docs/architecture.md."""
