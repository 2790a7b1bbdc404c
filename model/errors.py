"""Errors of the model package (the base classes live in :mod:`mmsa.common.errors`).

Every error a user can cause derives from :class:`MMSAError`; the command-line entry points
turn it into one line and an exit code. The other packages subclass it (``training.errors``,
``monitor.errors``).
"""

from __future__ import annotations

from mmsa.common.errors import ConfigError, MMSAError
from mmsa.common.packages import ResourceError


class CheckpointError(MMSAError):
    """A checkpoint is missing, corrupt, or incompatible with the running code."""


__all__ = ["CheckpointError", "ConfigError", "MMSAError", "ResourceError"]
