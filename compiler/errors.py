"""Typed errors. Library code raises these; only the CLI prints them and picks the exit code."""

from __future__ import annotations


class KdcError(Exception):
    """A problem the user can act on: a message, optionally a location and a hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, path: str | None = None,
                 line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = path
        self.line = line
        self.column = column

    def located(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        return where + self.message


class UsageError(KdcError):
    exit_code = 2


class TaxonomyError(KdcError):
    """The taxonomy (files, YAML, tree) cannot be read."""


class ConfigError(KdcError):
    """kdc.yaml or command-line settings are wrong."""
    exit_code = 2


class DocumentError(KdcError):
    """A knowledge document cannot be resolved (repo, commit, patterns)."""


class TeacherError(KdcError):
    """The teacher cannot be reached or configured."""


class BuildError(KdcError):
    """A build directory is missing, damaged or inconsistent."""


class ReviewError(KdcError):
    """A review sheet cannot be applied."""


class TrainError(KdcError):
    """Training or evaluation cannot run."""
