"""Exceptions of the project.

Every error a user can cause (bad config, wrong checkpoint, missing resource) derives from
:class:`MMSAError`; the command-line entry points turn it into one line and an exit code.
The other packages subclass it (``training.errors``, ``monitor.errors``).
"""

from __future__ import annotations


class MMSAError(Exception):
    """Base of every error that the CLIs report as one clear line."""

    exit_code: int = 1


class ConfigError(MMSAError):
    """A config file or ``--set`` override is malformed (unknown key, wrong type, bad value)."""

    exit_code = 2


class CheckpointError(MMSAError):
    """A checkpoint is missing, corrupt, or incompatible with the running code."""


class ResourceError(MMSAError):
    """A pretrained component (BERT, Whisper, VAD) cannot be found or loaded."""


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; turn an MMSAError into one line on stderr and its exit code.

    Ctrl-C exits 130 without a traceback. Anything else is a bug and keeps its traceback.
    """
    import logging
    import sys

    try:
        return int(main(argv) or 0)
    except MMSAError as exc:
        logging.getLogger("mmsa").debug("error", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
