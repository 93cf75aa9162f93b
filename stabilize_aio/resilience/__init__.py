"""resilience: see docs/architecture.md."""
