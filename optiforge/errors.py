"""Exception types shared by every package.

Every expected failure raises a subclass of :class:`OptiforgeError` whose message says what
went wrong and what to do about it. The CLI prints such errors without a traceback.
"""

from __future__ import annotations


class OptiforgeError(Exception):
    """Base class of all optiforge errors that a user can act on."""


class ConfigError(OptiforgeError):
    """A setting, flag or configuration file is invalid."""
