"""Spark SQL text helpers shared by the layers that build expressions as text."""

from __future__ import annotations


def sql_identifier(name: str) -> str:
    """``name`` as a Spark SQL identifier: backticks, inner backticks doubled."""
    return "`" + name.replace("`", "``") + "`"
