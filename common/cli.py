"""What every entry point (``mmsa-monitor``, ``mmsa-train``, ``mmsa-eval``) does around its main."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .errors import MMSAError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; turn an MMSAError into one line on stderr and its exit code.

    Ctrl-C exits 130 without a traceback. Anything else is a bug and keeps its traceback.
    """
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
