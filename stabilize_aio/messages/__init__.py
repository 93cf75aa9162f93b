"""messages: see docs/architecture.md."""
