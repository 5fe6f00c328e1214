"""Exceptions shared across the package."""


class ThinkfastError(ValueError):
    """Bad input or configuration: the message names the problem and the fix."""
