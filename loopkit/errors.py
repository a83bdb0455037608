"""The errors loopkit reports to a person rather than a programmer.

Every problem a user can fix -- a bad config key, a malformed data file, a damaged checkpoint, a run
whose loss stopped being finite -- is a `LoopkitError`, whose message names the key, file and line
or run; the command line prints it as one line, with no traceback, and exits with status 2.
"""

from __future__ import annotations


class LoopkitError(ValueError):
    """Base of every error whose message is meant for the user (one line, names what to fix)."""


class ConfigError(LoopkitError):
    """A configuration or input-file problem the user can fix: the message names the key and the
    allowed values, or the file and line."""
