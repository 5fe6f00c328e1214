"""Exceptions shared across the package."""


class ThinkfastError(ValueError):
    """Bad input or configuration: the message names the problem and the fix."""


class Stopped(ThinkfastError):
    """A run stopped on request (SIGTERM) after writing a checkpoint: rerunning the command resumes it."""

    exit_code = 143  # 128 + SIGTERM, what a scheduler expects of a job it asked to stop
