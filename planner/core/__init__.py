"""Shared foundations with no planner dependencies: errors, small types and formulas, file I/O,
JAX configuration."""
