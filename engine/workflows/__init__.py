"""Workflows: specs, nodes, the executor and triggers (docs/architecture.md, "Workflows")."""
