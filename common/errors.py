"""The base of every error a user can cause.

Every error a user can cause (bad config, wrong checkpoint, missing resource, bad input) derives
from :class:`MMSAError`; the command-line entry points (:func:`mmsa.common.cli.run_cli`) turn it
into one line and an exit code. The packages subclass it (``mmsa.model.errors``,
``mmsa.training.errors``, ``mmsa.monitor.errors``).
"""

from __future__ import annotations


class MMSAError(Exception):
    """Base of every error that the CLIs report as one clear line."""

    exit_code: int = 1


class ConfigError(MMSAError):
    """A config file or ``--set`` override is malformed (unknown key, wrong type, bad value)."""

    exit_code = 2
