"""Media errors: one line naming the file and the problem."""

from __future__ import annotations

from mmsa.model.errors import MMSAError


class MediaError(MMSAError):
    """A media file is missing, corrupt, truncated, or lacks the stream asked for."""
