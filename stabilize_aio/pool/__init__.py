"""pool: see docs/architecture.md."""
