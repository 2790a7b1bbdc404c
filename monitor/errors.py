"""Errors of the live monitor; the CLI prints them as one line."""

from __future__ import annotations

from mmsa.common.errors import MMSAError


class MonitorError(MMSAError):
    """Base of the monitor's user-facing errors."""


class SourceError(MonitorError):
    """A camera, microphone or replay file cannot be opened or decoded."""


class MediaError(SourceError):
    """A media file is missing, corrupt or truncated."""


class PublisherError(MonitorError):
    """An output (MQTT, JSONL log, recorder) is misconfigured."""
