"""Pretrained parts shipped inside Python packages: where an installed package keeps its files.

Nothing is fetched from a model hub at run time; every pretrained part (BERT, Whisper, the VAD)
comes inside a pinned package, and a missing one is one clear line naming what to install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import MMSAError

PACKAGED = "packaged"  # the value of a config key that means "the part shipped in its package"


class ResourceError(MMSAError):
    """A pretrained component (BERT, Whisper, VAD, checkpoint) cannot be found or loaded."""


def package_dir(module: str, install: str) -> Path:
    """The folder of the installed package ``module``; ResourceError naming ``install`` if absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ResourceError(f"the package {install!r} is not installed (pip install {install})")
    return Path(next(iter(spec.submodule_search_locations)))
