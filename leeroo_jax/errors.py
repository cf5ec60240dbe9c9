"""One-line user errors.

Anything a user can fix (a bad config, a corrupt checkpoint, a bad outcome row) raises a
subclass of `LeerooError` whose message names the problem and the fix on one line. Entry
points catch it, print it without a traceback and exit non-zero (see `run_main`).
"""

from __future__ import annotations

import sys
from typing import Callable


class LeerooError(Exception):
    """A user-fixable error; str(e) is a single line naming the problem and the fix."""


class ConfigError(LeerooError):
    pass


class WeightsError(LeerooError):
    pass


class DataError(LeerooError):
    pass


def run_main(main: Callable[[], int | None]) -> None:
    """Run `main`; a LeerooError becomes `error: <message>` on stderr and exit status 2."""
    try:
        code = main()
    except LeerooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
