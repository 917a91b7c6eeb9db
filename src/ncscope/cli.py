"""Command-line interface (placeholder until the engine lands)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ncscope`` command."""
    return 0
