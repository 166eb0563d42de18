"""Error types with the exit codes the CLI maps them to."""

from __future__ import annotations


class LakemlError(Exception):
    """Base error: its message is one sentence meant for the person running the job."""

    exit_code = 1


class UsageError(LakemlError):
    """Bad command line: unknown job or env, malformed --conf, bad run date (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """Missing config file, unknown key, wrong type, unset ${ENV} (exit 2)."""


class EnvironmentProblem(UsageError):
    """The machine lacks something the suite needs, e.g. Java 17 (exit 2)."""


class JobFailed(LakemlError):
    """A job ran and failed; the message says why (exit 1)."""


class TableError(LakemlError):
    """A table operation was refused: bad schema, bad predicate, duplicate merge keys, ..."""


class ConcurrentModificationError(TableError):
    """A commit conflicts with one made since this operation read the table."""
