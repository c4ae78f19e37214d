"""Typed exceptions: every user mistake becomes one of these, and the CLI prints it as one line.

A :class:`DualstreamError` message says what is wrong, where (file or config key), and how to fix it.
"""


class DualstreamError(Exception):
    """Base class for errors caused by input or configuration (not by bugs)."""


class DataError(DualstreamError):
    """A volume, label or mask file is missing, unreadable, or inconsistent."""


class ShapeMismatchError(DataError):
    """Two arrays that must align (image and labels, sections of a stack) do not."""


class EmptyPoolError(DualstreamError):
    """The candidate pool has no items, or none left to query."""


class ConfigError(DualstreamError):
    """A configuration value is out of range or inconsistent with the data."""
