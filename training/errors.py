"""Errors of training and evaluation; the CLI prints them as one line."""

from __future__ import annotations

from mmsa.model.errors import MMSAError


class TrainingError(MMSAError):
    """Base of training/evaluation errors."""


class DataError(TrainingError):
    """A label file, media file or split is missing or malformed (message names file, line, column)."""
