"""dag: how stages wait for each other (join policies); see docs/architecture.md."""
