"""Errors of the experiment runner; the `jaxebm` command turns them into messages and exit codes."""
from __future__ import annotations

__all__ = ["DataFileMismatch", "RunError", "RunLocked", "RunRefused"]


class RunRefused(ValueError):
    """The command does not fit the run directory (a changed config without ``--extend`` / ``--force``,
    fewer steps than already trained): the user has to choose differently (exit code 2)."""


class RunError(RuntimeError):
    """The run cannot go on as things stand on disk (exit code 1)."""


class RunLocked(RunError):
    """Another process holds the run directory's lock."""


class DataFileMismatch(RunError):
    """A data file exists but is unreadable or was made with other settings than the config asks for."""
